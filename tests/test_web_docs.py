"""Registry/Manager polish: the icon that pyproject names exists, WEB_DIRECTORY exists, every node
has a help page ``web/docs/<NodeId>.md`` that covers its inputs and outputs, and the live server
serves each page where ComfyUI's frontend looks for it (``/extensions/<pack>/docs/<NodeId>.md``,
the pack name taken from the node's ``python_module`` as the frontend does)."""
from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "web" / "docs"


def test_icon_named_in_pyproject_exists():
    from PIL import Image

    icon = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["comfy"]["Icon"]
    m = re.match(r"https://raw\.githubusercontent\.com/[^/]+/[^/]+/main/(.+)$", icon)
    assert m, f"Icon should be a raw URL of a file in this repository: {icon}"
    path = REPO / m.group(1)
    assert path.is_file(), f"pyproject's Icon points at {m.group(1)}, which does not exist"
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] == img.size[1] >= 128, (img.format, img.size)


def test_every_node_has_a_help_page_covering_its_inputs_and_outputs(pack):
    from self_cascade.nodes import all_nodes

    web = (REPO / pack.WEB_DIRECTORY).resolve()
    assert web == (REPO / "web").resolve() and web.is_dir()
    ids = set()
    for node in all_nodes():
        s = node.define_schema()
        ids.add(s.node_id)
        page = DOCS / f"{s.node_id}.md"
        assert page.is_file(), f"no help page web/docs/{s.node_id}.md"
        text = page.read_text()
        assert text.startswith(f"# {s.display_name}"), f"{page.name}: first line should be '# {s.display_name}'"
        named = set(re.findall(r"`([A-Za-z_]+)`", text))
        missing = [i.id for i in s.inputs if i.id not in named]
        assert not missing, f"{page.name} does not explain input(s) {missing}"
        outs = [o.display_name or o.id for o in s.outputs]
        assert all(o in named or o.upper() in named for o in outs if o), f"{page.name}: outputs {outs}"
    assert {p.stem for p in DOCS.glob("*.md")} == ids, "a help page for a node that does not exist"


def test_live_server_serves_every_help_page(comfy_server, client):
    info = client.object_info()
    ours = {k: v for k, v in info.items() if k.startswith("SelfCascade")}
    assert ours and {p.stem for p in DOCS.glob("*.md")} == set(ours)
    for node_id, entry in ours.items():
        module = entry["python_module"].split(".")  # the frontend: custom_nodes.<pack>
        assert module[0] == "custom_nodes", entry["python_module"]
        url = f"{comfy_server.url}/extensions/{module[1]}/docs/{node_id}.md"
        with urllib.request.urlopen(url, timeout=30) as r:
            assert r.read() == (DOCS / f"{node_id}.md").read_bytes(), url
