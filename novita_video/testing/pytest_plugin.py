"""A pytest fixture for the simulator: ``fake_novita``.

Enable it with ``pytest_plugins = ["novita_video.testing.pytest_plugin"]`` in a
``conftest.py`` (it is not registered as an entry point, so installing the SDK does
not load it into every pytest run), then::

    @pytest.mark.anyio
    async def test_submit(fake_novita: FakeNovita) -> None:
        client = MyClient(base_url=fake_novita.url, api_key=fake_novita.api_key)
        ...

The fixture is async, so it runs under anyio's pytest plugin; the simulator is
aiohttp, so it needs the asyncio backend (a trio run is skipped, not failed).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from ._server import FakeNovita

__all__ = ["fake_novita"]


@pytest.fixture
async def fake_novita(anyio_backend: object) -> AsyncIterator[FakeNovita]:
    """A started :class:`FakeNovita` with default knobs, closed after the test."""
    # Asking for anyio_backend makes anyio's plugin run this async fixture.
    name = anyio_backend[0] if isinstance(anyio_backend, tuple) else anyio_backend
    if name != "asyncio":
        pytest.skip("FakeNovita runs on aiohttp, which needs the asyncio backend")
    async with FakeNovita() as fake:
        yield fake
