"""A real headless Chromium loads ComfyUI's real frontend (comfyui-frontend-package, served by
the live server with the pack installed), opens each shipped UI workflow with the frontend's own
``app.loadGraphData`` and finds no missing-node warning; the frontend's own ``graphToPrompt``
of the loaded graph equals the API twin (so widget order is what the frontend expects); its
missing-models check reports the workflow's download entries (``properties.models``), none of
which the test server has. The node-info panel's store renders a pack help page.

Driven over the Chrome DevTools Protocol with aiohttp (already in the host venv). Skipped, with
the reason, when Chromium is not installed (``.ci/run`` installs Debian's ``chromium``).
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

import pytest

REPO = Path(__file__).resolve().parent.parent
WF = REPO / "workflows"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,900"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install "
                                "chromium; .ci/run does this when `command -v chromium` finds none)")

READY_JS = ("!!(window.app && typeof window.app.loadGraphData === 'function' && window.app.graph "
            "&& window.LiteGraph && window.LiteGraph.registered_node_types['SelfCascadeStage'])")

HOOK_JS = """(() => {
  window.__missing = [];
  window.__models = [];
  if (!window.app.__scHooked) {
    const orig = window.app.showMissingNodesError.bind(window.app);
    window.app.showMissingNodesError = (types, ...rest) => { window.__missing.push(types); return orig(types, ...rest); };
    const origModels = window.app.showMissingModelsError.bind(window.app);
    window.app.showMissingModelsError = (models, ...rest) => { window.__models.push(...models); return origModels(models, ...rest); };
    window.app.__scHooked = true;
  }
  return true;
})()"""

LOAD_JS = """(async () => {
  window.__missing = [];
  window.__models = [];
  await window.app.loadGraphData(%s, true, true, %s);
  await new Promise(r => setTimeout(r, 300));
  const nodes = window.app.graph.nodes || window.app.graph._nodes;
  const unknown = nodes.filter(n => n.type !== 'Note' && !window.LiteGraph.registered_node_types[n.type]).map(n => n.type);
  const errored = nodes.filter(n => n.has_errors).map(n => n.type);
  const text = document.body.innerText;
  // the missing-NODES warnings (the missing-models dialog, expected here, says 'models were not found')
  const warning = ['unsupported nodes', 'node types were not found', 'Missing Node'].filter(s => text.includes(s));
  const p = await window.app.graphToPrompt();
  const models = window.__models.map(m => ({name: m.name, url: m.url, directory: m.directory, invalid: !!m.directory_invalid}));
  return JSON.stringify({missing: window.__missing, models, unknown, errored, warning, count: nodes.length, output: p.output});
})()"""


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


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    import hostenv

    port = hostenv.free_port()
    profile = tmp_path_factory.mktemp("chromium_profile")
    log = open(profile.parent / "chromium.log", "w")
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
                    raise RuntimeError(f"Chromium did not start: {(profile.parent / 'chromium.log').read_text()[-2000:]}") from None
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
async def _frontend(port: int, url: str):
    """A CDP session on the browser's page with the ComfyUI frontend at ``url`` loaded and ready."""
    import aiohttp

    page = next(t for t in _json(f"http://127.0.0.1:{port}/json/list") if t["type"] == "page")
    async with aiohttp.ClientSession() as s, s.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
        cdp = CDP(ws)
        await cdp.call("Page.navigate", url=url)
        deadline = time.monotonic() + 120
        while not await cdp.eval(READY_JS):
            if time.monotonic() > deadline:
                raise AssertionError("the ComfyUI frontend did not become ready within 120 s (window.app, "
                                     "LiteGraph with SelfCascadeStage registered)")
            await asyncio.sleep(0.5)
        yield cdp


async def _open_all(port: int, url: str, graphs: dict[str, str]) -> dict:
    results = {}
    async with _frontend(port, url) as cdp:
        await cdp.eval(HOOK_JS)
        for name, data in graphs.items():
            results[name] = json.loads(await cdp.eval(LOAD_JS % (data, json.dumps(name))))
    return results


def test_frontend_opens_every_workflow_without_missing_nodes(comfy_server, browser):
    from test_workflows import SHIPPED

    graphs = {name: (WF / f"{name}.json").read_text() for name in SHIPPED}
    results = asyncio.run(_open_all(browser, comfy_server.url + "/", graphs))
    for name in SHIPPED:
        r = results[name]
        ui = json.loads((WF / f"{name}.json").read_text())
        assert r["count"] == len(ui["nodes"]), (name, r["count"])
        assert not r["missing"] and not r["unknown"] and not r["warning"], (name, r)
        assert not r["errored"], (name, r["errored"])
        api = json.loads((WF / "api" / f"{name}.json").read_text())
        assert r["output"] == api, f"{name}: the frontend's graphToPrompt differs from the API twin:\n" \
                                   f"{json.dumps(r['output'], sort_keys=True)[:3000]}"
        entries = [m for n in ui["nodes"] for m in n["properties"].get("models", [])]
        want = sorted({(m["name"], m["url"], m["directory"]) for m in entries})
        assert sorted((m["name"], m["url"], m["directory"]) for m in r["models"]) == want, (name, r["models"])
        assert not any(m["invalid"] for m in r["models"]), (name, r["models"])
    # a FLOAT output drives a widget input in the frontend: the untrained node's strength feeds both stages
    out = results["sd15_cascade_2048_upsamplers"]["output"]
    (ups,) = [k for k, n in out.items() if n["class_type"] == "SelfCascadeUntrainedUpsamplers"]
    strengths = [n["inputs"]["strength"] for n in out.values() if n["class_type"] == "SelfCascadeStage"]
    assert strengths == [[ups, 1], [ups, 1]], strengths


def test_missing_node_detection_can_fail(comfy_server, browser):
    """The same check flags a workflow with a node type the server does not have."""
    ui = json.loads((WF / "sd15_cascade_2048.json").read_text())
    next(n for n in ui["nodes"] if n["type"] == "SelfCascadeStage")["type"] = "SelfCascadeNoSuchNode"
    r = asyncio.run(_open_all(browser, comfy_server.url + "/", {"broken": json.dumps(ui)}))["broken"]
    assert r["missing"] and "SelfCascadeNoSuchNode" in json.dumps(r["missing"]), r


HELP_JS = """(async () => {
  const host = [...document.querySelectorAll('body *')].find(e => e.__vue_app__);
  const pinia = host.__vue_app__.config.globalProperties.$pinia;
  if (!pinia._s.get('nodeHelp')) {  // the store is created with the node library sidebar
    await window.app.extensionManager.command.execute('Workspace.ToggleSidebarTab.node-library');
  }
  const t0 = Date.now();
  while (!pinia._s.get('nodeHelp') && Date.now() - t0 < 10000) await new Promise(r => setTimeout(r, 100));
  const help = pinia._s.get('nodeHelp');
  if (!help) return JSON.stringify({error: 'no nodeHelp store', stores: [...pinia._s.keys()]});
  const def = pinia._s.get('nodeDef').nodeDefsByName[%s];
  help.openHelp(def);
  await new Promise(r => setTimeout(r, 50));
  while ((help.isLoading || !help.renderedHelpHtml) && Date.now() - t0 < 20000) await new Promise(r => setTimeout(r, 100));
  return JSON.stringify({html: help.renderedHelpHtml, error: help.error, baseUrl: help.baseUrl});
})()"""


async def _node_help(port: int, url: str, node_id: str) -> dict:
    async with _frontend(port, url) as cdp:
        return json.loads(await cdp.eval(HELP_JS % json.dumps(node_id)))


def test_node_info_panel_shows_the_packs_help_page(comfy_server, browser):
    """The frontend's own node-help store (what the node-info panel renders) fetches web/docs/<NodeId>.md."""
    r = asyncio.run(_node_help(browser, comfy_server.url + "/", "SelfCascadeStage"))
    assert r.get("error") is None, r
    assert r["baseUrl"] == "/extensions/self_cascade/docs/", r["baseUrl"]
    html = r["html"]
    assert "<h1" in html and "Self-Cascade Stage</h1>" in html, html[:500]
    assert "50 steps at K=700 run 35-36" in html, "the rendered page is not web/docs/SelfCascadeStage.md"
