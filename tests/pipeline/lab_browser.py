"""A real JupyterLab in a real browser, for one test: Debian's chromium, headless, driven over the
Chrome DevTools Protocol with tornado's websocket client (jupyter_server's own dependency), so no
browser-automation package is needed.

`lab_page(root)` starts `jupyter lab` on `root` as `make lab` does (`recnb.lab`, with `window.jupyterapp` exposed) and chromium on
its start page, and yields an `evaluate(js)` that runs an async JavaScript expression in the page
and returns its JSON value.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import secrets
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

from recnb.lab import lab_command

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float) -> bytes:
    end = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.read()
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.5)


class _Page:
    """One page target's DevTools websocket: `evaluate(js)` with `awaitPromise` and `returnByValue`."""

    def __init__(self, ws_url: str) -> None:
        from tornado.websocket import websocket_connect

        async def connect():  # tornado ties the connection to the loop running it
            return await websocket_connect(ws_url, max_message_size=64 * 2**20)

        self.loop = asyncio.new_event_loop()
        self.ws = self.loop.run_until_complete(connect())
        self.ids = itertools.count(1)

    def evaluate(self, expression: str, timeout: float = 120.0):
        return self.loop.run_until_complete(asyncio.wait_for(self._evaluate(expression), timeout))

    async def _evaluate(self, expression: str):
        msg_id = next(self.ids)
        await self.ws.write_message(json.dumps({"id": msg_id, "method": "Runtime.evaluate", "params": {
            "expression": expression, "awaitPromise": True, "returnByValue": True}}))
        while True:
            reply = json.loads(await self.ws.read_message())
            if reply.get("id") != msg_id:
                continue
            if "error" in reply:  # e.g. the page navigated while evaluating: its context is gone
                raise RuntimeError(f"DevTools: {reply['error'].get('message')}")
            result = reply.get("result", {})
            if "exceptionDetails" in result:
                raise RuntimeError(f"page JavaScript failed: {result['exceptionDetails'].get('exception', {}).get('description')}")
            return result.get("result", {}).get("value")

    def close(self) -> None:
        self.ws.close()
        self.loop.close()


@contextlib.contextmanager
def lab_page(root: Path, startup_s: float = 120.0) -> Iterator[Callable[[str], object]]:
    """JupyterLab serving `root` in headless chromium; yields `evaluate(js)` (see the module doc)."""
    lab_port, cdp_port, token = _free_port(), _free_port(), secrets.token_hex(8)
    lab = subprocess.Popen(
        lab_command(root, "--no-browser", f"--ServerApp.port={lab_port}", f"--IdentityProvider.token={token}",
                    "--LabApp.expose_app_in_browser=True", "--ServerApp.open_browser=False",
                    "--allow-root"),  # CI containers run as root
        stdout=subprocess.DEVNULL, stderr=(root / "lab.log").open("w"))
    browser = None
    page = None
    try:
        _wait_http(f"http://127.0.0.1:{lab_port}/api/status?token={token}", startup_s)
        browser = subprocess.Popen(
            [CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             f"--remote-debugging-port={cdp_port}", f"--user-data-dir={root / '.chromium'}",
             f"http://127.0.0.1:{lab_port}/lab?token={token}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        targets = json.loads(_wait_http(f"http://127.0.0.1:{cdp_port}/json/list", startup_s))
        page = _Page(next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"))
        yield page.evaluate
    finally:
        if page is not None:
            page.close()
        for proc in (browser, lab):
            if proc is not None:
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=20)
                if proc.poll() is None:
                    proc.kill()
