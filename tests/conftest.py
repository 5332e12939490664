from typing import Any

import pytest

from novita_video.testing import VirtualTimeLoop

pytest_plugins = ["novita_video.testing.pytest_plugin"]


@pytest.fixture
def anyio_backend(request: pytest.FixtureRequest) -> str | tuple[str, dict[str, Any]]:
    # A test marked virtual_time runs on a loop whose time jumps to the next timer
    # (with a socketless client: tests.support.in_memory), so minutes of tasks take none.
    if request.node.get_closest_marker("virtual_time") is not None:
        return ("asyncio", {"loop_factory": VirtualTimeLoop})
    return "asyncio"
