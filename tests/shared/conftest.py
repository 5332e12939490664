"""Each test here gets a real ``redis-server`` of its own (see ``redis_support``)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.shared.redis_support import REDIS_SERVER, RedisServer, redis_server


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    if REDIS_SERVER is None and not os.environ.get("CI"):
        pytest.skip("no redis-server on PATH (apt-get install -y redis-server); CI installs it")
    with redis_server() as server:
        yield server
