"""A small Chrome DevTools protocol client for the viewer tests: headless Debian Chromium driven over
``--remote-debugging-pipe`` (the protocol's JSON messages, NUL-separated, on file descriptors 3 and 4), so no
websocket library or browser-driver package is needed.

    b = Browser.launch(profile_dir)
    page = b.new_page()
    page.goto("http://127.0.0.1:8765/")
    page.wait_for("document.body.dataset.ready === '1'")
    page.click("#problems tbody tr")
    assert page.errors == []          # console errors, uncaught exceptions, failed loads, CSP violations
    page.screenshot(Path("shot.png"))
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Puts the two pipe ends on fds 3 and 4 (where --remote-debugging-pipe looks) and execs the browser; the ends arrive
# on fds >= 10, so neither dup2 overwrites the other.
_LAUNCHER = ("import os, sys\nos.dup2(int(sys.argv[1]), 3)\nos.dup2(int(sys.argv[2]), 4)\n"
             "os.execv(sys.argv[3], sys.argv[3:])")


class CdpError(RuntimeError):
    pass


class Browser:
    """One headless Chromium process and the protocol connection to it."""

    def __init__(self, proc: subprocess.Popen[bytes], to_browser: int, from_browser: int) -> None:
        self.proc = proc
        self._out = to_browser
        self._in = from_browser
        self._next = 0
        self._lock = threading.Lock()
        self._waiting: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._listeners: dict[str, list[queue.Queue[dict[str, Any]]]] = {}
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @classmethod
    def launch(cls, profile: Path, *, width: int = 1400, height: int = 1000) -> Browser:
        assert CHROMIUM is not None
        to_r, to_w = os.pipe()
        from_r, from_w = os.pipe()
        child_r = fcntl.fcntl(to_r, fcntl.F_DUPFD, 10)
        child_w = fcntl.fcntl(from_w, fcntl.F_DUPFD, 10)
        args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe",
                f"--user-data-dir={profile}", "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                f"--window-size={width},{height}", "about:blank"]
        proc = subprocess.Popen([sys.executable, "-c", _LAUNCHER, str(child_r), str(child_w), *args],
                                pass_fds=(child_r, child_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        for fd in (to_r, from_w, child_r, child_w):
            os.close(fd)
        b = cls(proc, to_w, from_r)
        b.call("Browser.getVersion", timeout=30)
        return b

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._in, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                for q in list(self._waiting.values()):
                    q.put({"error": {"message": "the browser went away"}})
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    q = self._waiting.pop(msg["id"], None)
                    if q is not None:
                        q.put(msg)
                else:
                    for q in list(self._listeners.get(msg.get("sessionId", ""), ())):
                        q.put(msg)

    def call(self, method: str, params: dict[str, Any] | None = None, *, session: str | None = None,
             timeout: float = 20) -> dict[str, Any]:
        with self._lock:
            self._next += 1
            mid = self._next
            q: queue.Queue[dict[str, Any]] = queue.Queue()
            self._waiting[mid] = q
            msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
            if session:
                msg["sessionId"] = session
            os.write(self._out, json.dumps(msg).encode() + b"\0")
        try:
            reply = q.get(timeout=timeout)
        except queue.Empty:
            self._waiting.pop(mid, None)
            raise CdpError(f"{method}: no reply in {timeout} s") from None
        if "error" in reply:
            raise CdpError(f"{method}: {reply['error'].get('message')}")
        return dict(reply.get("result", {}))

    def new_page(self, *, width: int = 1400, height: int = 1000) -> Page:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        return Page(self, target, session, width, height)

    def listen(self, session: str) -> queue.Queue[dict[str, Any]]:
        q: queue.Queue[dict[str, Any]] = queue.Queue()
        self._listeners.setdefault(session, []).append(q)
        return q

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=5)
        except (CdpError, OSError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        for fd in (self._out, self._in):
            try:
                os.close(fd)
            except OSError:
                pass


class Page:
    """One tab. ``errors`` collects what a user would see as a broken page: console errors, uncaught exceptions,
    resources that failed to load, blocked content (CSP)."""

    def __init__(self, browser: Browser, target: str, session: str, width: int, height: int) -> None:
        self.browser = browser
        self.target = target
        self.session = session
        self.errors: list[str] = []
        self._events = browser.listen(session)
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False})

    def call(self, method: str, params: dict[str, Any] | None = None, timeout: float = 20) -> dict[str, Any]:
        return self.browser.call(method, params, session=self.session, timeout=timeout)

    def _drain(self) -> list[dict[str, Any]]:
        seen = []
        while True:
            try:
                msg = self._events.get_nowait()
            except queue.Empty:
                return seen
            seen.append(msg)
            self._note(msg)

    def _note(self, msg: dict[str, Any]) -> None:
        method, p = msg.get("method"), msg.get("params", {})
        if method == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            self.errors.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            self.errors.append("exception: " + str(d.get("exception", {}).get("description") or d.get("text")))
        elif method == "Log.entryAdded" and p["entry"].get("level") == "error":
            self.errors.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}".strip())

    def goto(self, url: str, timeout: float = 20) -> None:
        self._drain()
        self.call("Page.navigate", {"url": url})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = self._events.get(timeout=0.1)
            except queue.Empty:
                continue
            self._note(msg)
            if msg.get("method") in ("Page.loadEventFired", "Page.navigatedWithinDocument"):
                return  # a new document loaded, or only the #fragment changed
        raise CdpError(f"{url} did not load in {timeout} s")

    def eval(self, expression: str, timeout: float = 20) -> Any:
        """The value of a JavaScript expression (promises awaited)."""
        r = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True},
                      timeout=timeout)
        self._drain()
        if "exceptionDetails" in r:
            raise CdpError(f"{expression[:80]}: {r['exceptionDetails'].get('text')} "
                           f"{r['exceptionDetails'].get('exception', {}).get('description', '')}")
        return r.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 20) -> Any:
        """Poll until ``expression`` is truthy; returns its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.eval(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise CdpError(f"timed out waiting for {expression[:120]} (page errors: {self.errors})")
            time.sleep(0.05)

    def click(self, selector: str) -> None:
        """A real mouse click in the middle of the first element ``selector`` matches (scrolled into view)."""
        box = self.eval(f"""(() => {{ const e = document.querySelector({json.dumps(selector)});
            if (!e) return null; e.scrollIntoView({{block: 'center', inline: 'center'}});
            const r = e.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; }})()""")
        if box is None:
            raise CdpError(f"no element matches {selector!r}")
        x, y = box
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    def select(self, selector: str, value: str) -> None:
        """Choose ``value`` in a <select> as a user would (its change event fires)."""
        self.eval(f"""(() => {{ const s = document.querySelector({json.dumps(selector)});
            s.value = {json.dumps(value)}; s.dispatchEvent(new Event('change', {{bubbles: true}})); }})()""")

    def fill(self, selector: str, text: str) -> None:
        """Replace a field's text by typing it (focus, select all, insert)."""
        self.eval(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); e.focus(); e.select(); }})()")
        self.call("Input.insertText", {"text": text})

    def screenshot(self, path: Path, *, full_page: bool = True) -> Path:
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            w, h = self.eval("[document.documentElement.scrollWidth, document.documentElement.scrollHeight]")
            params.update(captureBeyondViewport=True, clip={"x": 0, "y": 0, "width": w, "height": min(h, 6000),
                                                             "scale": 1})
        data = self.call("Page.captureScreenshot", params, timeout=60)["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.browser.call("Target.closeTarget", {"targetId": self.target}, timeout=5)
        except CdpError:
            pass
