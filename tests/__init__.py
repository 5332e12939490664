"""The test suite: end-to-end over loopback against the simulator, unit tests on virtual time."""
