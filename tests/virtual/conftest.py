"""Every test here runs on :class:`~tests.support.VirtualTimeLoop`: no socket, no real wait."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from novita_video.testing import VirtualTimeLoop


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return ("asyncio", {"loop_factory": VirtualTimeLoop})


@pytest.fixture
async def loop() -> VirtualTimeLoop:
    """The running virtual-time loop (read ``loop.elapsed``)."""
    running = asyncio.get_running_loop()
    assert isinstance(running, VirtualTimeLoop)
    return running
