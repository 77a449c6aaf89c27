"""Drive ComfyUI's real frontend in a headless Chromium over the Chrome DevTools Protocol.

Shared by ``tests/test_browser.py`` and ``dev/screenshots.py``: start Chromium (Debian's
``chromium``), open a page on a live ComfyUI server, wait until the frontend is ready, evaluate
JavaScript in it. Uses aiohttp (in the host venv) for the page's websocket; nothing else.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WINDOW = (1920, 1080)  # a common desktop screen: the view a user gets on load
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", f"--window-size={WINDOW[0]},{WINDOW[1]}"]

READY_JS = ("!!(window.app && typeof window.app.loadGraphData === 'function' && window.app.graph "
            "&& window.LiteGraph && window.LiteGraph.registered_node_types['SelfCascadeStage'])")


class CDP:
    """A minimal Chrome DevTools Protocol client over one page's websocket."""

    def __init__(self, ws):
        self.ws, self.n = ws, 0

    async def call(self, method: str, **params) -> dict:
        self.n += 1
        await self.ws.send_json({"id": self.n, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == self.n:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    async def eval(self, expr: str):
        r = await self.call("Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in r:
            raise RuntimeError(f"JS error: {json.dumps(r['exceptionDetails'])[:2000]}")
        return r["result"].get("value")


def _json(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


@contextlib.contextmanager
def chromium(profile: Path, port: int):
    """A headless Chromium with its DevTools endpoint on ``port``; yields the port, stops it on exit."""
    if CHROMIUM is None:
        raise RuntimeError("Chromium is not installed (Debian: apt-get install chromium)")
    profile.mkdir(parents=True, exist_ok=True)
    log_path = profile.parent / f"{profile.name}.chromium.log"
    log = open(log_path, "w")
    proc = subprocess.Popen([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
                             "about:blank"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                _json(f"http://127.0.0.1:{port}/json/version")
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Chromium did not start: {log_path.read_text()[-2000:]}") from None
                time.sleep(0.3)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextlib.asynccontextmanager
async def frontend(port: int, url: str, viewport: tuple[int, int] | None = None):
    """A CDP session on the browser's page with the ComfyUI frontend at ``url`` loaded and ready.

    ``viewport`` (width, height) emulates a smaller screen than the window (e.g. a laptop's)."""
    import aiohttp

    page = next(t for t in _json(f"http://127.0.0.1:{port}/json/list") if t["type"] == "page")
    async with aiohttp.ClientSession() as s, s.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
        cdp = CDP(ws)
        width, height = viewport or WINDOW
        await cdp.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1,
                       mobile=False)
        await cdp.call("Page.navigate", url=url)
        deadline = time.monotonic() + 120
        while not await cdp.eval(READY_JS):
            if time.monotonic() > deadline:
                raise AssertionError("the ComfyUI frontend did not become ready within 120 s (window.app, "
                                     "LiteGraph with SelfCascadeStage registered)")
            await asyncio.sleep(0.5)
        yield cdp
