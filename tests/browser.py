"""A real headless Chromium (Debian's `chromium`), driven over the DevTools protocol, for the
tests of the HTML report.

    with Browser.start(tmp_path) as browser:
        seen = browser.load(page.as_uri())
        seen.errors        console errors, uncaught exceptions, failed loads, CSP violations
        seen.links         every <a href> of the page, as the browser resolved it
        seen.screenshot    the page as PNG bytes; distinct_colours(png) says it is not blank

The package is installed by the test command's install step (tests/system_services.py); when
it is missing, `Browser.start` raises BrowserUnavailable and the fixture skips loudly. The flags
are the ones this machine's closed network needs (INFRA: without the background-networking
flags Chromium keeps trying hosts it cannot reach). One page target, attached in flat mode: every
message travels on the one WebSocket of the browser.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websocket

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--hide-scrollbars", "--window-size=1280,900")
LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


class BrowserUnavailable(RuntimeError):
    """No Chromium here, or it would not start."""


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class Seen:
    """What the browser saw of one page."""

    url: str
    title: str = ""
    errors: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    screenshot: bytes = b""
    text: str = ""


class Browser:
    def __init__(self, process: subprocess.Popen[str], socket: websocket.WebSocket) -> None:
        self.process = process
        self.socket = socket
        self._next_id = 0
        self.session = ""

    @classmethod
    @contextmanager
    def start(cls, profile: Path, timeout: float = 60.0) -> Iterator[Browser]:
        binary = chromium_path()
        if binary is None:
            raise BrowserUnavailable("chromium is not installed (python3 -m tests.system_services)")
        profile.mkdir(parents=True, exist_ok=True)
        process = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
             "about:blank"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        try:
            address = _devtools_address(process, timeout)
            browser = cls(process, websocket.create_connection(address, timeout=timeout))
            try:
                browser._attach()
                yield browser
            finally:
                browser.socket.close()
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _attach(self) -> None:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target,
                                 flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def call(self, method: str, timeout: float = 60.0, events: list[dict[str, Any]] | None = None,
             **params: Any) -> dict[str, Any]:
        """Send one command and wait for its answer; events that arrive meanwhile are kept."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        self.socket.send(json.dumps(message))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = json.loads(self.socket.recv())
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            if events is not None and "method" in reply:
                events.append(reply)
        raise TimeoutError(f"no answer to {method} in {timeout} s")

    def _events_until(self, name: str, events: list[dict[str, Any]], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(event["method"] == name for event in events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {name} in {timeout} s")
            self.socket.settimeout(max(0.1, deadline - time.monotonic()))
            reply = json.loads(self.socket.recv())
            if "method" in reply:
                events.append(reply)

    def load(self, url: str, timeout: float = 60.0) -> Seen:
        """Navigate to `url`, wait for its load event, and read what the page shows."""
        events: list[dict[str, Any]] = []
        navigated = self.call("Page.navigate", events=events, url=url)
        seen = Seen(url=url)
        if navigated.get("errorText"):
            seen.errors.append(f"navigation: {navigated['errorText']}")
            return seen
        self._events_until("Page.loadEventFired", events, timeout)
        seen.title = self._evaluate("document.title", events)
        seen.text = self._evaluate("document.body ? document.body.innerText : ''", events)
        seen.links = json.loads(self._evaluate(
            "JSON.stringify(Array.from(document.querySelectorAll('a[href]'), a => a.href))",
            events))
        shot = self.call("Page.captureScreenshot", events=events, format="png")
        seen.screenshot = base64.b64decode(shot["data"])
        seen.errors.extend(_errors(events))
        return seen

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page loaded last."""
        return self._evaluate(expression, [])

    def _evaluate(self, expression: str, events: list[dict[str, Any]]) -> Any:
        result = self.call("Runtime.evaluate", events=events, expression=expression,
                           returnByValue=True)
        return result["result"].get("value")


def _devtools_address(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stderr is not None
    deadline = time.monotonic() + timeout
    lines = []
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        lines.append(line.rstrip())
        found = LISTENING.search(line)
        if found:
            return found.group(1)
    raise BrowserUnavailable("chromium did not start: " + " | ".join(lines[-5:]))


def _errors(events: list[dict[str, Any]]) -> Iterator[str]:
    for event in events:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.exceptionThrown":
            yield f"exception: {params['exceptionDetails'].get('text')}"
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            yield f"console.{params['type']}: {params.get('args')}"
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            yield f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}"
        elif method == "Network.loadingFailed" and not params.get("canceled"):
            yield f"failed load: {params.get('errorText')} ({params.get('type')})"


def distinct_colours(png: bytes, limit: int = 64) -> int:
    """How many distinct pixel values (up to `limit`) a PNG screenshot holds: 1 is blank."""
    width, _height, channels, rows = _png_rows(png)
    colours: set[bytes] = set()
    for row in rows:
        for x in range(0, width * channels, channels * 7):  # a sample of each row is enough
            colours.add(row[x:x + channels])
            if len(colours) >= limit:
                return len(colours)
    return len(colours)


def _png_rows(png: bytes) -> tuple[int, int, int, list[bytes]]:
    """The unfiltered rows of an 8-bit, non-interlaced RGB/RGBA PNG (what Chromium writes)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, data = 8, b""
    width = height = channels = 0
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos:pos + 8])
        chunk = png[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
            assert depth == 8 and interlace == 0 and colour in (2, 6), "unexpected PNG format"
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            data += chunk
        pos += 12 + length
    raw = zlib.decompress(data)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                guess = left + up - corner
                pa, pb, pc = abs(guess - left), abs(guess - up), abs(guess - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc
                                      else corner)) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, channels, rows
