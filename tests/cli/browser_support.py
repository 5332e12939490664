"""A headless Chromium driven over the DevTools protocol, offline, with aiohttp alone.

Debian's ``chromium`` (what CI installs) listens on a loopback port of its choosing
(``--remote-debugging-port=0``, written to ``DevToolsActivePort`` in its profile); this
speaks the protocol over aiohttp's WebSocket client, already a dependency, so nothing
is installed and nothing leaves the machine. The browser runs with its networking
services off, and :class:`Page` records every request a page makes, so a test can check
that a gallery asks for nothing but files beside it.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import anyio.abc

CHROMIUM = next(
    (found for name in ("chromium", "chromium-browser") if (found := shutil.which(name))), None
)

_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--no-default-browser-check",
    "--no-first-run",
    "--mute-audio",
    "--remote-debugging-port=0",
)


class BrowserError(Exception):
    """The browser answered a command with an error, or did not start."""


class Browser:
    """One Chromium process and its DevTools connection; open with :func:`chromium`."""

    def __init__(self, socket: aiohttp.ClientWebSocketResponse) -> None:
        self._socket = socket
        self._ids = itertools.count(1)
        self._waiting: dict[int, anyio.abc.ObjectSendStream[dict[str, Any]]] = {}
        self._events: list[tuple[str | None, str, anyio.abc.ObjectSendStream[dict[str, Any]]]] = []
        self._receivers: list[anyio.abc.ObjectReceiveStream[dict[str, Any]]] = []

    async def _read(self) -> None:
        async for message in self._socket:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if "id" in data:
                sender = self._waiting.pop(data["id"], None)
                if sender is not None:
                    with sender:
                        await sender.send(data)
                continue
            for session, method, sender in list(self._events):
                if method == data.get("method") and session == data.get("sessionId"):
                    # A listener that fell behind (or left) misses events, never blocks.
                    with suppress(
                        anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError
                    ):
                        sender.send_nowait(data.get("params", {}))

    async def send(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        """One command; its result (or :class:`BrowserError`)."""
        number = next(self._ids)
        sender, receiver = anyio.create_memory_object_stream[dict[str, Any]](1)
        self._waiting[number] = sender
        message: dict[str, Any] = {"id": number, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        with receiver:
            await self._socket.send_str(json.dumps(message))
            with anyio.fail_after(60):
                answer = await receiver.receive()
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    def listen(self, method: str, session: str | None) -> anyio.abc.ObjectReceiveStream[Any]:
        """Every ``method`` event of ``session`` from now on (the last 1000 kept)."""
        sender, receiver = anyio.create_memory_object_stream[dict[str, Any]](1000)
        self._events.append((session, method, sender))
        self._receivers.append(receiver)
        return receiver

    def close(self) -> None:
        """Close every stream of commands and events (the connection is going)."""
        for sender in self._waiting.values():
            sender.close()
        self._waiting.clear()
        for _, _, sender in self._events:
            sender.close()
        self._events.clear()
        for receiver in self._receivers:
            receiver.close()
        self._receivers.clear()

    async def new_page(self, width: int = 1280, height: int = 900) -> Page:
        """A new tab of ``width`` x ``height`` CSS pixels, attached."""
        target = await self.send("Target.createTarget", {"url": "about:blank"})
        attached = await self.send(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(self, attached["sessionId"])
        await page.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send("Network.enable")
        return page


class Page:
    """One tab: navigate, evaluate script, type and click as a person does."""

    def __init__(self, browser: Browser, session: str) -> None:
        self.browser = browser
        self.session = session
        #: Every URL the page asked for (``Network.requestWillBeSent``).
        self.requests = browser.listen("Network.requestWillBeSent", session)
        self.errors = browser.listen("Runtime.exceptionThrown", session)

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.send(method, params, self.session)

    async def goto(self, url: str, timeout: float = 60) -> None:
        """Open ``url`` and wait for its load event."""
        loaded = self.browser.listen("Page.loadEventFired", self.session)
        await self.send("Page.navigate", {"url": url})
        with anyio.fail_after(timeout):
            await loaded.receive()

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited)."""
        answer = await self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in answer:
            raise BrowserError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30) -> Any:
        """Wait until ``expression`` is truthy; its value."""
        with anyio.fail_after(timeout):
            while not (value := await self.evaluate(expression)):
                await anyio.sleep(0.05)
        return value

    async def click(self, selector: str) -> None:
        """Click the middle of the first element ``selector`` finds, with the mouse."""
        box = await self.evaluate(
            f"(() => {{ const e = document.querySelector({json.dumps(selector)});"
            " e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        x, y = box
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent",
                {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1},
            )

    async def type(self, selector: str, text: str) -> None:
        """Focus ``selector`` and type ``text`` into it, as the keyboard would."""
        await self.evaluate(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.send("Input.insertText", {"text": text})

    def requested(self) -> list[str]:
        """The URLs the page has asked for so far."""
        urls = []
        while True:
            try:
                urls.append(self.requests.receive_nowait()["request"]["url"])
            except anyio.WouldBlock:
                return urls

    def thrown(self) -> list[str]:
        """The script errors the page has thrown so far."""
        errors = []
        while True:
            try:
                details = self.errors.receive_nowait()["exceptionDetails"]
            except anyio.WouldBlock:
                return errors
            errors.append(str(details.get("exception", {}).get("description") or details))


@asynccontextmanager
async def chromium(profile: Path | None = None) -> AsyncIterator[Browser]:
    """A headless Chromium for one block; closed (and its profile removed) after it."""
    if CHROMIUM is None:
        raise BrowserError("no chromium on PATH (apt-get install -y chromium)")
    # Its helpers (renderers, the zygote) may still be writing in the profile a moment
    # after the browser ends: what is left there then is not an error.
    with tempfile.TemporaryDirectory(
        prefix="novita-chromium-", ignore_cleanup_errors=True
    ) as scratch:
        home = Path(profile or scratch)
        port_file = home / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        process = await anyio.open_process(
            [CHROMIUM, *_FLAGS, f"--user-data-dir={home}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            # No proxy, no crash reporter: the browser has no business on the network.
            env={**os.environ, "no_proxy": "*"},
            # A group of its own: the browser and every helper it starts end together.
            start_new_session=True,
        )
        try:
            with anyio.fail_after(60):
                while not (port_file.is_file() and len(port_file.read_text().split()) >= 2):
                    if process.returncode is not None:
                        raise BrowserError(f"chromium ended with {process.returncode}")
                    await anyio.sleep(0.05)
            port, path = port_file.read_text().split()[:2]
            async with (
                aiohttp.ClientSession() as http,
                http.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0) as socket,
                anyio.create_task_group() as group,
            ):
                browser = Browser(socket)
                group.start_soon(browser._read)
                try:
                    yield browser
                finally:
                    group.cancel_scope.cancel()
                    browser.close()
        finally:
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            with anyio.move_on_after(10):
                await process.wait()
            with suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # what is left of the group
            await process.aclose()
