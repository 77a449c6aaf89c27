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


def test_help_pages_auto_k_table_is_what_the_pack_computes(pack):
    """The K_mode auto list on the Stage and Upscale help pages: every entry is the K that
    nodes.timesteps.equal_snr_k computes for K = 700 with ComfyUI's own model_sampling class of that family
    at its default shift (rounded to the whole timestep the table shows)."""
    import comfy.model_sampling as cms
    import comfy.supported_models as sm
    from self_cascade.nodes.timesteps import equal_snr_k

    class Discrete(cms.ModelSamplingDiscrete, cms.EPS):
        pass

    class Flow(cms.ModelSamplingDiscreteFlow, cms.CONST):
        pass

    class Flux(cms.ModelSamplingFlux, cms.CONST):
        pass

    def flow(shift: float):
        ms = Flow()
        ms.set_parameters(shift=shift)
        return ms

    families = {"SD1.x, SD2.x, SDXL": Discrete(sm.SDXL({})), "SD3 / SD3.5 (3.0)": Flow(sm.SD3({})),
                "FLUX.1 dev (1.15)": Flux(sm.Flux({})), "FLUX.1 schnell (1.0)": Flux(sm.FluxSchnell({})),
                "Wan 2.1 (8)": flow(8.0), "HunyuanVideo (7)": flow(7.0), "Mochi (6)": flow(6.0),
                "Cosmos (1)": flow(1.0)}
    want = {name: str(round(equal_snr_k(ms, 700.0))) for name, ms in families.items()}
    for page in ("SelfCascadeStage.md", "SelfCascadeUpscale.md"):
        rows = dict(re.findall(r"^- ([^:`\n]+): (\d+)$", (DOCS / page).read_text(), re.M))
        assert rows == want, (page, rows, want)
