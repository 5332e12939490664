import pytest

pytest_plugins = ["novita_video.testing.pytest_plugin"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
