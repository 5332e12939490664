"""The reliability suite (see its conftest)."""
