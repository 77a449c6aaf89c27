"""A real headless Chromium loads ComfyUI's real frontend (comfyui-frontend-package, served by
the live server with the pack installed), opens each shipped UI workflow with the frontend's own
``app.loadGraphData`` and finds no missing-node warning; the frontend's own ``graphToPrompt``
of the loaded graph equals the API twin (so widget order is what the frontend expects); its
missing-models check reports the workflow's download entries (``properties.models``), none of
which the test server has, and the Missing Models dialog shows no error entry.

The layout rule is checked on the sizes the frontend gives the nodes (after its own
``computeSize`` growth, title bars included): no two nodes overlap, every node and note lies inside
one group (below its title) and touches no other group, every note's text fits its box (no
scrolling at zoom 1), and the view the user gets on load shows every node, at a zoom where the
frontend draws text, with none under the minimap or the Run toolbar. A deliberately broken copy
of a workflow shows each check can fail. The node-info panel renders each pack help page, which
fits the sidebar's default width on a 1280x800 screen and whose first sentence is plain words; the
templates browser names the pack's category and shows its square thumbnails; dev/screenshots.py's
capture works on the same frontend.

Driven over the Chrome DevTools Protocol (dev/browser.py). Skipped, with the reason, when Chromium
is not installed (``.ci/run`` installs Debian's ``chromium``).
"""
from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import browser  # dev/browser.py (dev/ is on the host venv's path)
import graph  # dev/workflows/graph.py (on the path via conftest)
import layout  # dev/workflows/layout.py
import pytest

REPO = Path(__file__).resolve().parent.parent
WF = REPO / "workflows"

pytestmark = pytest.mark.skipif(browser.CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get "
                                "install chromium; .ci/run does this when `command -v chromium` finds none)")

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

PINIA_JS = "[...document.querySelectorAll('body *')].find(e => e.__vue_app__).__vue_app__.config.globalProperties.$pinia"

LOAD_JS = """(async () => {
  const pinia = %(pinia)s;
  const dialogs = pinia._s.get('dialog');
  const closeAll = () => { while (dialogs.dialogStack.length) dialogs.closeDialog({key: dialogs.dialogStack[0].key}); };
  closeAll();
  window.__missing = [];
  window.__models = [];
  await window.app.loadGraphData(%(data)s, true, true, %(name)s);
  await new Promise(r => setTimeout(r, 600));  // the fit-view of a workflow without a saved view runs on a frame
  const graph = window.app.graph;
  const nodes = graph.nodes || graph._nodes;
  const unknown = nodes.filter(n => !['Note', 'MarkdownNote'].includes(n.type) && !window.LiteGraph.registered_node_types[n.type]).map(n => n.type);
  const errored = nodes.filter(n => n.has_errors).map(n => n.type);
  const text = document.body.innerText;
  // the missing-NODES warnings (the missing-models dialog, expected here, says 'models were not found')
  const warning = ['unsupported nodes', 'node types were not found', 'Missing Node'].filter(s => text.includes(s));
  const p = await window.app.graphToPrompt();
  const models = window.__models.map(m => ({name: m.name, url: m.url, directory: m.directory, invalid: !!m.directory_invalid}));
  const dialog = document.querySelector('.comfy-missing-models');
  const dialogErrors = dialog ? [...dialog.querySelectorAll('.p-message-error')].map(e => e.innerText.trim()) : [];
  const c = window.app.canvas;
  const r = c.canvas.getBoundingClientRect();
  const overlays = {};  // what the frontend draws over the canvas
  for (const [what, selector] of [['minimap', '.minimap-main-container'], ['Run toolbar', '.actionbar-container']]) {
    const e = document.querySelector(selector);
    if (e) { const b = e.getBoundingClientRect(); overlays[what] = [b.left, b.top, b.width, b.height]; }
  }
  const view = {scale: c.ds.scale, offset: [...c.ds.offset], lowQuality: c.low_quality, threshold: c._lowQualityZoomThreshold,
                canvas: [r.left, r.top, r.width, r.height], overlays};
  const boxes = nodes.map(n => ({id: n.id, type: n.type, title: n.title, box: [...n.boundingRect]}));
  const groups = (graph._groups || graph.groups).map(g => ({title: g.title, box: [...g._bounding], titleHeight: g.titleHeight}));
  closeAll();
  const notes = [];
  for (const n of nodes.filter(n => n.type === 'Note' || n.type === 'MarkdownNote')) {
    c.ds.scale = 1; c.ds.offset = [40 - n.pos[0], 80 - n.pos[1]];
    c.setDirty(true, true); c.draw(true, true);
    await new Promise(r => setTimeout(r, 300));
    const el = n.widgets && n.widgets[0] && n.widgets[0].element;  // a textarea, or the markdown widget's div
    const md = el && el.querySelector('.ProseMirror');
    let text = el ? el.scrollHeight : -1;
    if (md && md.lastElementChild) {  // the rendered markdown fills the box: measure its last block instead
      text = md.lastElementChild.getBoundingClientRect().bottom - md.getBoundingClientRect().top
             + parseFloat(getComputedStyle(md).paddingBottom);
    }
    notes.push({id: n.id, text: Math.ceil(text), client: el ? el.clientHeight : -1,
                wide: el ? (md || el).scrollWidth > (md || el).clientWidth : true});
  }
  return JSON.stringify({missing: window.__missing, models, unknown, errored, warning, count: nodes.length,
                         output: p.output, dialogErrors, view, boxes, groups, notes});
})()"""


def layout_problems(r: dict) -> list[str]:
    """What breaks the layout rule in one loaded workflow, on the frontend's boxes (title bars included):
    the generator's geometric rule (layout.layout_problems), notes whose text does not fit, and the view on
    load (every node on screen, text drawn, nothing under the minimap or the Run toolbar)."""
    name = {b["id"]: f"{b['title'] or b['type']} (#{b['id']})" for b in r["boxes"]}
    problems = layout.layout_problems([(name[b["id"]], b["box"]) for b in r["boxes"]],
                                     [(g["title"], g["box"], g["titleHeight"]) for g in r["groups"]])
    for note in r["notes"]:
        if note["client"] <= 0 or note["text"] > note["client"] or note["wide"]:
            problems.append(f"note #{note['id']}: its text does not fit ({note['text']} px of text in "
                            f"{note['client']} px{', too wide' if note['wide'] else ''})")
        elif note["client"] > 1.5 * note["text"] + 40:
            problems.append(f"note #{note['id']}: its box is much larger than its text ({note['text']} px of "
                            f"text in {note['client']} px)")
    v = r["view"]
    if v["lowQuality"]:
        problems.append(f"the view on load (zoom {v['scale']:.2f}) is below the zoom where the frontend draws text "
                        f"({v['threshold']})")
    cx, cy, _, _ = v["canvas"]
    for b in r["boxes"]:
        x, y, w, h = b["box"]
        screen = [(x + v["offset"][0]) * v["scale"] + cx, (y + v["offset"][1]) * v["scale"] + cy,
                  w * v["scale"], h * v["scale"]]
        if not layout.inside(screen, v["canvas"]):
            problems.append(f"{name[b['id']]} is outside the view on load")
        for what, rect in v["overlays"].items():
            if layout.overlap(screen, rect) > 0:
                problems.append(f"{name[b['id']]} is under the {what} in the view on load")
    return problems


async def _open_all(port: int, url: str, graphs: dict[str, str]) -> dict:
    results = {}
    async with browser.frontend(port, url) as cdp:
        await cdp.eval(HOOK_JS)
        for name, data in graphs.items():
            js = LOAD_JS % {"pinia": PINIA_JS, "data": data, "name": json.dumps(name)}
            results[name] = json.loads(await cdp.eval(js))
    return results


def _broken_copy() -> tuple[dict, str, int]:
    """sdxl_cascade_4096 with every rule broken once: a node moved onto another, a note too small for its
    text and out of every group, a note far larger than its text, a saved view that leaves the nodes out at a
    zoom too small for text, a .pth download entry (the dialog refuses that suffix). Returns the workflow and
    the name the checks give the moved node."""
    ui = json.loads((WF / "sdxl_cascade_4096.json").read_text())
    ui["extra"]["ds"] = {"scale": 0.3, "offset": [8000, 0]}
    stages = [n for n in ui["nodes"] if n["type"] == "SelfCascadeStage"]
    stages[1]["pos"] = [stages[0]["pos"][0] + 40, stages[0]["pos"][1] + 40]
    note, big = [n for n in ui["nodes"] if n["type"] in graph.NOTE_TYPES][:2]
    note["size"] = [240, 60]
    note["pos"] = [-2000, -2000]
    big["size"][1] *= 4
    loader = next(n for n in ui["nodes"] if n["type"] == "CheckpointLoaderSimple")
    loader["properties"]["models"] = [{"name": "upsampler_only.pth", "directory": "checkpoints",
                                       "url": "https://huggingface.co/x/y/resolve/main/upsampler_only.pth"}]
    loader["widgets_values"] = ["upsampler_only.pth"]
    return ui, f"{stages[1]['title']} (#{stages[1]['id']})", big["id"]


@pytest.fixture(scope="module")
def chrome(tmp_path_factory):
    import hostenv

    with browser.chromium(tmp_path_factory.mktemp("chromium") / "profile", hostenv.free_port()) as port:
        yield port


def test_frontend_opens_every_workflow_without_missing_nodes(comfy_server, chrome):
    from test_workflows import SHIPPED

    graphs = {name: (WF / f"{name}.json").read_text() for name in SHIPPED}
    broken_ui, moved, big_id = _broken_copy()
    graphs["broken"] = json.dumps(broken_ui)
    results = asyncio.run(_open_all(chrome, comfy_server.url + "/", graphs))
    failures = {}
    for name in SHIPPED:  # every problem of every workflow, then one assertion
        r = results[name]
        ui = json.loads((WF / f"{name}.json").read_text())
        api = json.loads((WF / "api" / f"{name}.json").read_text())
        entries = [m for n in ui["nodes"] for m in n["properties"].get("models", [])]
        want = sorted({(m["name"], m["url"], m["directory"]) for m in entries})
        got = sorted((m["name"], m["url"], m["directory"]) for m in r["models"])
        checks = {f"{r['count']} nodes loaded of {len(ui['nodes'])}": r["count"] == len(ui["nodes"]),
                  f"missing nodes: {r['missing']} {r['unknown']} {r['warning']}":
                      not (r["missing"] or r["unknown"] or r["warning"]),
                  f"nodes with errors: {r['errored']}": not r["errored"],
                  "the frontend's graphToPrompt differs from the API twin: "
                  f"{json.dumps(r['output'], sort_keys=True)[:1500]}": r["output"] == api,
                  f"download entries reported {got}, the file has {want}": got == want,
                  f"invalid download folders: {r['models']}": not any(m["invalid"] for m in r["models"])}
        problems = [what for what, ok in checks.items() if not ok] + layout_problems(r)
        problems += [f"Missing Models dialog error: {e}" for e in r["dialogErrors"]]
        if problems:
            failures[name] = problems
    assert not failures, json.dumps(failures, indent=1)
    # a FLOAT output drives a widget input in the frontend: the untrained node's strength feeds both stages
    out = results["sd15_cascade_2048_upsamplers"]["output"]
    (ups,) = [k for k, n in out.items() if n["class_type"] == "SelfCascadeUntrainedUpsamplers"]
    strengths = [n["inputs"]["strength"] for n in out.values() if n["class_type"] == "SelfCascadeStage"]
    assert strengths == [[ups, 1], [ups, 1]], strengths
    # the same checks catch each broken rule
    broken = results["broken"]
    found = "\n".join(layout_problems(broken))
    assert f"{moved} overlaps" in found or f"overlaps {moved}" in found, found
    assert "its text does not fit" in found and "is not inside exactly one group" in found, found
    assert "outside the view on load" in found and "below the zoom where the frontend draws text" in found, found
    assert f"note #{big_id}: its box is much larger than its text" in found, found
    assert any("Only allowed suffixes" in e for e in broken["dialogErrors"]), broken["dialogErrors"]


def test_missing_node_detection_can_fail(comfy_server, chrome):
    """The same check flags a workflow with a node type the server does not have."""
    ui = json.loads((WF / "sd15_cascade_2048.json").read_text())
    next(n for n in ui["nodes"] if n["type"] == "SelfCascadeStage")["type"] = "SelfCascadeNoSuchNode"
    r = asyncio.run(_open_all(chrome, comfy_server.url + "/", {"broken": json.dumps(ui)}))["broken"]
    assert r["missing"] and "SelfCascadeNoSuchNode" in json.dumps(r["missing"]), r


HELP_JS = """(async () => {
  const pinia = %(pinia)s;
  if (!pinia._s.get('nodeHelp') || !document.querySelector('.node-lib-tree-explorer, .node-help-content')) {
    await window.app.extensionManager.command.execute('Workspace.ToggleSidebarTab.node-library');
  }
  const t0 = Date.now();
  while (!pinia._s.get('nodeHelp') && Date.now() - t0 < 10000) await new Promise(r => setTimeout(r, 100));
  const help = pinia._s.get('nodeHelp');
  if (!help) return JSON.stringify({error: 'no nodeHelp store', stores: [...pinia._s.keys()]});
  const out = {};
  for (const id of %(ids)s) {
    const def = pinia._s.get('nodeDef').nodeDefsByName[id];
    help.openHelp(def);
    await new Promise(r => setTimeout(r, 50));
    const t1 = Date.now();
    while ((help.isLoading || !help.renderedHelpHtml) && Date.now() - t1 < 20000) await new Promise(r => setTimeout(r, 100));
    await new Promise(r => setTimeout(r, 200));  // the panel renders the new page
    const content = document.querySelector('.node-help-content');
    const box = content ? content.getBoundingClientRect() : null;
    const tables = content ? [...content.querySelectorAll('table')].map(t => ({
      overflow: Math.round(t.getBoundingClientRect().right - box.right), head: t.rows[0].innerText})) : null;
    const first = content ? content.querySelector('.markdown-content > p') : null;
    const panel = content ? content.parentElement : null;  // the scrolling sidebar panel
    out[id] = {html: help.renderedHelpHtml, error: help.error, baseUrl: help.baseUrl, tables,
               wider: panel ? panel.scrollWidth - panel.clientWidth : 0,
               width: box ? Math.round(box.width) : 0, firstParagraph: first ? first.innerText : null,
               description: def.description};
  }
  return JSON.stringify(out);
})()"""
HELP_NODES = ("SelfCascadeStage", "SelfCascadeUpscale", "SelfCascadeStagePlan", "SelfCascadeUpsamplerLoader",
              "SelfCascadeUntrainedUpsamplers", "SelfCascadeApplyUpsamplers", "SelfCascadePivotUpsample",
              "SelfCascadeRenoise", "SelfCascadeTrainUpsamplers")
LAPTOP = (1280, 800)  # the sidebar's default width is a share of the window: a small screen is the hard case


TEMPLATES_JS = """(async () => {
  const pinia = %(pinia)s;
  const dialogs = pinia._s.get('dialog');
  if (!document.querySelector('[data-testid^="template-workflow-"]')) {
    await window.app.extensionManager.command.execute('Comfy.BrowseTemplates');
  }
  const t0 = Date.now();
  while (!document.querySelector('[data-testid="template-workflow-sd15_cascade_2048"] img') && Date.now() - t0 < 20000)
    await new Promise(r => setTimeout(r, 200));
  await new Promise(r => setTimeout(r, 1000));  // the thumbnails load
  const dialog = document.querySelector('[data-testid="template-workflow-sd15_cascade_2048"]').closest('.p-dialog');
  const cards = [...dialog.querySelectorAll('[data-testid^="template-workflow-"]')].map(card => {
    const img = card.querySelector('img');  // lazy: only the cards in view have loaded theirs
    return [card.dataset.testid.slice('template-workflow-'.length), img ? img.naturalWidth : 0, img ? img.naturalHeight : 0];
  });
  const text = dialog.innerText;
  while (dialogs.dialogStack.length) dialogs.closeDialog({key: dialogs.dialogStack[0].key});
  return JSON.stringify({text, cards});
})()"""


async def _node_help(port: int, url: str, node_ids) -> tuple[dict, dict]:
    async with browser.frontend(port, url, viewport=LAPTOP) as cdp:
        templates = json.loads(await cdp.eval(TEMPLATES_JS % {"pinia": PINIA_JS}))
        help_pages = json.loads(await cdp.eval(HELP_JS % {"pinia": PINIA_JS, "ids": json.dumps(list(node_ids))}))
        return help_pages, templates


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!?])\s", text.strip(), maxsplit=1)[0]


def test_templates_browser_and_help_pages(comfy_server, chrome):
    from test_workflows import SHIPPED

    """The templates browser lists the pack's workflows under "Self-Cascade" with their square thumbnails. The
    frontend's own node-help store (what the node-info panel renders) fetches web/docs/<NodeId>.md for
    every pack node; at the sidebar's default width on a 1280x800 screen no table sticks out of the panel;
    the page and the node's description (the search preview) open with a sentence free of equations."""
    pages, templates = asyncio.run(_node_help(chrome, comfy_server.url + "/", HELP_NODES))
    # the templates browser: the pack's category under its readable name (locales/en/main.json), each card's
    # thumbnail loaded square (the card's shape: the readable title is drawn on it, dev/workflows/thumbnails.py)
    assert "Self-Cascade" in templates["text"], templates["text"][:1000]
    cards = {name: (w, h) for name, w, h in templates["cards"] if name in SHIPPED}
    assert sorted(cards) == sorted(SHIPPED), templates["cards"]
    loaded = [wh for wh in cards.values() if wh[0]]
    assert loaded and all(wh == (512, 512) for wh in loaded), cards
    r = pages["SelfCascadeStage"]
    assert r.get("error") is None, r
    assert r["baseUrl"] == "/extensions/self_cascade/docs/", r["baseUrl"]
    html = r["html"]
    assert "<h1" in html and "Self-Cascade Stage</h1>" in html, html[:500]
    opening = (REPO / "web" / "docs" / "SelfCascadeStage.md").read_text().split("\n\n")[1].split("\n")[0]
    assert opening.split(":")[0] in html, "the rendered page is not web/docs/SelfCascadeStage.md"
    problems = []
    for node_id, page in pages.items():
        assert page["error"] is None and page["tables"] is not None, (node_id, page)
        assert 150 < page["width"] < 400, (node_id, page["width"])  # the sidebar, not a full-width page
        if page["wider"] > 0:
            problems.append(f"{node_id}: the page is {page['wider']} px wider than the {page['width']} px panel")
        for t in page["tables"]:
            if t["overflow"] > 0:
                problems.append(f"{node_id}: table ({t['head']!r}) is {t['overflow']} px wider than the "
                                f"{page['width']} px panel")
        for what, text in (("help page", page["firstParagraph"] or ""), ("description", page["description"] or "")):
            first = _first_sentence(text)
            if not first or re.search(r"\bEq(\.|uation)|\bAlgorithm\b|\bECCV\b", first):
                problems.append(f"{node_id}: the {what} opens with {first[:120]!r}")
    assert not problems, "\n".join(problems)


def test_screenshot_script_writes_a_small_fitted_picture(comfy_server, chrome, tmp_path):
    """dev/screenshots.py's capture on the running frontend: one workflow, the whole window, a small palette
    PNG, at the zoom the frontend chose to fit the graph (no view is saved in the file)."""
    import screenshots
    from PIL import Image

    ((path, scale),) = asyncio.run(screenshots.shoot(chrome, comfy_server.url + "/", ["train_upsamplers"], tmp_path))
    with Image.open(path) as img:
        assert img.size == browser.WINDOW and img.mode == "P", (img.size, img.mode)
    assert path.stat().st_size < 120_000, path.stat().st_size
    assert 0.57 < scale < 1.5, scale  # fitted: above the frontend's text threshold, not the saved default
