"""Unit tests on virtual time: the poller and batches with tasks of minutes, in milliseconds."""
