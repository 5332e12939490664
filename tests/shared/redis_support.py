"""A real ``redis-server`` for the tests: started on a unix socket of its own, stopped after.

Debian's package (``.ci/run`` installs it when missing). Each server listens on a unix
socket in a temporary folder (no TCP port: nothing to collide with), keeps nothing on
disk, and can be killed and started again on the same socket, as a Redis that goes away
mid-run and comes back.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

REDIS_SERVER = shutil.which("redis-server")


class RedisServer:
    """One ``redis-server`` process; :attr:`url` stays the same across restarts."""

    def __init__(self, folder: Path) -> None:
        self.socket = folder / "redis.sock"
        self.url = f"unix://{self.socket}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert REDIS_SERVER is not None, "redis-server is not installed (apt install redis-server)"
        self._process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.socket.parent),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(unix_socket_path=str(self.socket)) as probe:
                    probe.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    raise AssertionError("redis-server did not start") from None
                time.sleep(0.02)

    def kill(self) -> None:
        """Stop it at once, as a crash would (SIGKILL: nothing is said to clients)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)  # a paused server dies too
            self._process.kill()
            self._process.wait(timeout=10)
            self._process = None
        self.socket.unlink(missing_ok=True)

    def pause(self) -> None:
        """Freeze it (SIGSTOP): connections stay open and nothing answers, as an
        overloaded or stalled Redis does."""
        assert self._process is not None
        self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Let a paused server go on (SIGCONT)."""
        assert self._process is not None
        self._process.send_signal(signal.SIGCONT)

    def client(self) -> redis.Redis:
        """A synchronous redis-py client, to look at what the SDK stored."""
        return redis.Redis(unix_socket_path=str(self.socket))


@contextmanager
def redis_server() -> Iterator[RedisServer]:
    with tempfile.TemporaryDirectory(prefix="nv-redis-") as folder:
        server = RedisServer(Path(folder))
        server.start()
        try:
            yield server
        finally:
            server.kill()
