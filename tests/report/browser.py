"""Load a local HTML file in headless Chromium over the DevTools protocol (loopback only).

Returns what the page did: console errors, uncaught exceptions, failed loads, and the result of
a JavaScript expression evaluated after the load event. Used by the report tests; needs the
``chromium`` binary (Debian package) and ``aiohttp`` for the websocket.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0"]


def find_browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


async def _session(port_file: Path, url: str, expression: str, timeout: float) -> dict:
    import aiohttp

    deadline = time.monotonic() + timeout
    while not port_file.exists() or len(port_file.read_text().splitlines()) < 2:
        if time.monotonic() > deadline:
            raise TimeoutError("chromium did not open its DevTools port")
        await asyncio.sleep(0.05)
    port = int(port_file.read_text().splitlines()[0])
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
            targets = await r.json(content_type=None)
        page = next(t for t in targets if t["type"] == "page")
        async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            ids = iter(range(1, 10 ** 6))
            events: list[dict] = []
            replies: dict[int, dict] = {}

            async def call(method, **params):
                i = next(ids)
                await ws.send_str(json.dumps({"id": i, "method": method, "params": params}))
                while i not in replies:
                    msg = json.loads((await asyncio.wait_for(ws.receive(), deadline - time.monotonic())).data)
                    if "id" in msg:
                        replies[msg["id"]] = msg
                    else:
                        events.append(msg)
                return replies.pop(i)

            for domain in ("Runtime", "Log", "Page", "Network"):
                await call(f"{domain}.enable")
            await call("Page.navigate", url=url)
            while not any(e["method"] == "Page.loadEventFired" for e in events):
                msg = json.loads((await asyncio.wait_for(ws.receive(), deadline - time.monotonic())).data)
                if "id" not in msg:
                    events.append(msg)
            value = await call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
    errors = []
    for e in events:
        m, p = e["method"], e.get("params", {})
        if m == "Runtime.exceptionThrown":
            errors.append(f"exception: {p['exceptionDetails'].get('text')} {p['exceptionDetails'].get('exception', {}).get('description', '')}")
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            errors.append(f"console.{p['type']}: {[a.get('value') for a in p.get('args', [])]}")
        elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
            errors.append(f"log: {p['entry'].get('text')} {p['entry'].get('url', '')}")
        elif m == "Network.loadingFailed":
            errors.append(f"load failed: {p.get('errorText')}")
    return {"errors": errors, "value": value.get("result", {}).get("result", {}).get("value")}


def load_page(path: Path, expression: str, timeout: float = 60.0) -> dict:
    """Open ``path`` in a fresh headless Chromium; returns ``{"errors": [...], "value": <expression result>}``."""
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError("no chromium binary")
    # Chromium's helper processes (renderer, GPU, crashpad) outlive the main one for a moment and keep
    # writing into the profile: end the whole process group, and let a late write not fail the check.
    with tempfile.TemporaryDirectory(prefix="rbgeo-chromium-", ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen([browser, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            return asyncio.run(_session(Path(profile) / "DevToolsActivePort", Path(path).resolve().as_uri(),
                                        expression, timeout))
        finally:
            _end_group(proc)


def _end_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the browser's process group, then SIGKILL to whatever of the group outlived its leader."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
