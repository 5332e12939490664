"""Many workers, one account: limits and webhook events shared through a real Redis."""
