"""The shipped workflows: UI and API twins describe the same graph, valid for the live server;
the SD1.5 API workflows (text-to-image and image-in) run on the real server with a test-built
SD1.5-shaped checkpoint, the SDXL one with a test-built SDXL-shaped checkpoint; the Flux/SD3 ones
pass /prompt validation and run with that checkpoint standing in (wiring only: no Flux/SD3 weights here); download entries
(only what the frontend's dialog can fetch), the layout rule on the saved boxes, notes that link docs in full, and
flow-model K values are checked."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import graph  # dev/workflows/graph.py, the generator's format conversion (on the path via conftest)
import layout  # dev/workflows/layout.py, the layout rule
import pytest

REPO = Path(__file__).resolve().parent.parent
WF = REPO / "workflows"

SHIPPED = ("sd15_cascade_2048", "sd15_cascade_2048_upsamplers", "sdxl_cascade_4096", "train_upsamplers",
           "composable_pivot_renoise", "sd15_image_cascade_2048", "flux_cascade_2048", "sd3_cascade_2048")
UPSAMPLER_FILE = "tiny_sd15_upsamplers.safetensors"


@pytest.fixture(scope="module")
def info(client, tiny_checkpoint, upsampler_file):
    return client.object_info()


@pytest.fixture(scope="module")
def upsampler_file(pack, comfy_server, tiny_checkpoint_file):
    """A fresh (seeded) upsampler set for the tiny checkpoint's UNet, saved with the pack's own format."""
    import comfy.sd
    import torch
    from self_cascade.nodes import patch
    from self_cascade.upsampler import fileformat, modules, taps

    model = comfy.sd.load_checkpoint_guess_config(str(tiny_checkpoint_file), output_vae=False, output_clip=False)[0]
    unet = model.get_model_object("diffusion_model")
    torch.manual_seed(0)
    uset = modules.UpsamplerSet.create(taps.derive_taps(unet), taps.emb_dim(unet), patch.model_family(model), "official")
    folder = comfy_server.base_dir / "models" / "self_cascade"
    folder.mkdir(parents=True, exist_ok=True)
    fileformat.save_upsamplers(str(folder / UPSAMPLER_FILE), uset)
    return UPSAMPLER_FILE


def _ui(name):
    return json.loads((WF / f"{name}.json").read_text())


def _api(name):
    return json.loads((WF / "api" / f"{name}.json").read_text())


def test_every_shipped_workflow_has_ui_api_and_thumbnail():
    for name in SHIPPED:
        for path in (WF / f"{name}.json", WF / "api" / f"{name}.json", WF / f"{name}.jpg"):
            assert path.is_file(), f"missing {path.relative_to(REPO)}"
    assert sorted(p.stem for p in WF.glob("*.json")) == sorted(SHIPPED)


def _check_api_against_info(prompt: dict, info: dict) -> None:
    """Every node type, input name (both ways: no unknown, no required missing), combo value and link."""
    for nid, node in prompt.items():
        ct = node["class_type"]
        assert ct in info, f"{nid}: {ct} not in /object_info"
        specs = {name: (spec, opt) for name, spec, opt in graph.input_specs(info, ct)}
        assert set(node["inputs"]) <= set(specs), f"{nid} {ct}: unknown inputs {set(node['inputs']) - set(specs)}"
        for name, (spec, optional) in specs.items():
            assert optional or name in node["inputs"], f"{nid} {ct}: required input {name} missing"
            if name not in node["inputs"]:
                continue
            v = node["inputs"][name]
            if isinstance(v, list):  # a link
                src = prompt[v[0]]
                out_type = info[src["class_type"]]["output"][v[1]]
                assert out_type == spec[0], f"{nid} {ct}.{name}: link from {src['class_type']} gives {out_type}"
            else:
                assert graph.is_widget(spec), f"{nid} {ct}.{name}: a value for a socket input"
                options = spec[0] if isinstance(spec[0], list) else spec[1].get("options")
                if options is not None and not graph._dynamic_combo(name):
                    assert v in options, f"{nid} {ct}.{name}={v!r} not in {options[:8]}"


@pytest.mark.parametrize("name", SHIPPED)
def test_ui_and_api_twins_describe_the_same_valid_graph(info, name):
    if not (WF / f"{name}.json").is_file():
        pytest.fail(f"workflows/{name}.json missing (run dev/workflows/build.py once its nodes exist)")
    ui, api = _ui(name), _api(name)
    assert ui["version"] == 0.4 and ui["groups"], name
    notes = [n for n in ui["nodes"] if n["type"] in graph.NOTE_TYPES]
    assert notes and all(len(n["widgets_values"][0]) > 80 for n in notes), "each workflow explains its knobs"
    assert graph.ui_to_api(ui, info) == api
    _check_api_against_info(api, info)
    # every UI link is consistent with both endpoints' slot lists
    by_id = {n["id"]: n for n in ui["nodes"]}
    for lid, src, sslot, dst, dslot, typ in ui["links"]:
        assert lid in by_id[src]["outputs"][sslot]["links"]
        assert by_id[dst]["inputs"][dslot]["link"] == lid and by_id[dst]["inputs"][dslot]["type"] == typ


def test_converter_catches_drift(info):
    """The check can fail: a renamed input, a wrong widget count and a bad combo value are reported."""
    ui = _ui("sd15_cascade_2048")
    stage = next(n for n in ui["nodes"] if n["type"] == "SelfCascadeStage")
    stage["widgets_values"].append(1)
    with pytest.raises(ValueError, match="left over"):
        graph.ui_to_api(ui, info)
    stage["widgets_values"].pop()
    stage["widgets_values"][1] = "no_such_method"
    with pytest.raises(ValueError, match="not one of"):
        graph.ui_to_api(ui, info)
    ui = _ui("sd15_cascade_2048")
    next(n for n in ui["nodes"] if n["type"] == "KSampler")["inputs"][0]["name"] = "modle"
    with pytest.raises(KeyError, match="modle"):
        graph.ui_to_api(ui, info)
    api = _api("sd15_cascade_2048")
    assert graph.ui_to_api(_ui("sd15_cascade_2048_upsamplers"), info) != api


RUNNABLE = ("sd15_cascade_2048", "sd15_cascade_2048_upsamplers", "composable_pivot_renoise", "sd15_image_cascade_2048")


def run_cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """The command-line client as a user runs it (a separate stdlib-only process)."""
    return subprocess.run([sys.executable, str(WF / "api" / "queue_workflow.py"), *args],
                          capture_output=True, text=True, timeout=timeout)


def _input_png(path: Path, size: int = 32) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("name", RUNNABLE)
def test_api_workflow_runs_on_real_server_via_cli(comfy_server, info, tiny_checkpoint, upsampler_file, name, tmp_path):
    """Each API workflow, sizes/steps overridden small (base 32 px, 4 steps), queued with queue_workflow.py;
    the image-in workflow gets a 32 px image through --image (uploaded by the client)."""
    from PIL import Image

    has_ups = any(n["class_type"] == "SelfCascadeUpsamplerLoader" for n in _api(name).values())
    extra = ["--upsampler", upsampler_file] if has_ups else []
    if any(n["class_type"] == "LoadImage" for n in _api(name).values()):
        extra += ["--image", str(_input_png(tmp_path / f"in_{name}.png"))]
    else:
        extra += ["--width", "32", "--height", "32"]
    proc = run_cli(name, "--server", comfy_server.url, "--checkpoint", tiny_checkpoint, "--steps", "4", "--seed", "3",
                   "--prompt", "a small test", "--out", str(tmp_path), "--progress-every", "2", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:] + comfy_server.log()[-3000:]
    saved = [Path(line) for line in proc.stdout.split()]
    assert len(saved) == 1 and saved[0].parent == tmp_path, proc.stdout
    img = Image.open(saved[0])
    expected = 128 if name.startswith("sd15") else 64  # 32 -> 64 -> 128 (two stages) or one stage
    assert img.size == (expected, expected)
    assert "queued" in proc.stderr and "override: Positive Prompt.text='a small test'" in proc.stderr
    if name == "sd15_cascade_2048_upsamplers":  # no trained file: the untrained node fed both tuned stages
        assert not has_ups and "--upsampler" not in extra
        assert "using UNTRAINED upsamplers" in comfy_server.log(), comfy_server.log()[-3000:]
    if "--image" in extra:
        assert f"uploaded {tmp_path / f'in_{name}.png'} as input/in_{name}.png" in proc.stderr, proc.stderr
        assert (comfy_server.base_dir / "input" / f"in_{name}.png").is_file()


def test_sd15_upsamplers_workflow_needs_no_file_and_says_how_to_train(pack):
    """The shipped SD1.5 tuned workflow uses the untrained node (wired from the checkpoint's MODEL) for both
    stages, whose strength is linked to the node's recommendation (the UI widget keeps the same value);
    no loader, no file name; the note marks it experimental and names the training workflow."""
    from self_cascade.nodes.untrained import UNTRAINED_STRENGTH

    api = _api("sd15_cascade_2048_upsamplers")
    assert not [n for n in api.values() if n["class_type"] == "SelfCascadeUpsamplerLoader"]
    (ups,) = [k for k, n in api.items() if n["class_type"] == "SelfCascadeUntrainedUpsamplers"]
    (ckpt,) = [k for k, n in api.items() if n["class_type"] == "CheckpointLoaderSimple"]
    assert api[ups]["inputs"] == {"model": [ckpt, 0]}
    stages = [n["inputs"] for n in api.values() if n["class_type"] == "SelfCascadeStage"]
    assert len(stages) == 2
    assert all(s["upsamplers"] == [ups, 0] and s["strength"] == [ups, 1] for s in stages), stages
    ui = _ui("sd15_cascade_2048_upsamplers")
    for node in (n for n in ui["nodes"] if n["type"] == "SelfCascadeStage"):
        (sock,) = [i for i in node["inputs"] if i["name"] == "strength"]
        assert sock["widget"] == {"name": "strength"} and sock["link"] is not None
        assert UNTRAINED_STRENGTH in node["widgets_values"]
    text = " ".join(n["widgets_values"][0] for n in ui["nodes"] if n["type"] in graph.NOTE_TYPES)
    for phrase in ("EXPERIMENTAL", "unverified on Stable Diffusion", "train_upsamplers", "scripts/train_upsamplers.py",
                   "Load Upsamplers"):
        assert phrase in text, phrase


def test_sd15_upsamplers_workflow_takes_a_trained_file_via_cli(comfy_server, info, tiny_checkpoint, upsampler_file,
                                                               tmp_path):
    """--upsampler swaps the untrained node for a loader of the user's trained file (strength 1.0) and runs."""
    from PIL import Image

    proc = run_cli("sd15_cascade_2048_upsamplers", "--server", comfy_server.url, "--checkpoint", tiny_checkpoint,
                   "--upsampler", upsampler_file, "--width", "32", "--height", "32", "--steps", "2", "--seed", "3",
                   "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:] + comfy_server.log()[-3000:]
    saved = [Path(line) for line in proc.stdout.split()]
    assert len(saved) == 1 and Image.open(saved[0]).size == (128, 128)
    assert "-> Load Upsamplers (SelfCascadeUpsamplerLoader)" in proc.stderr, proc.stderr
    assert f"override: Load Upsamplers.upsampler_name='{upsampler_file}'" in proc.stderr
    assert "override: Stage 1: 1024px.strength=1.0" in proc.stderr and "Stage 2: 2048px.strength=1.0" in proc.stderr


@pytest.fixture(scope="module")
def tiny_sdxl(comfy_server, pack):
    """The SDXL-shaped checkpoint (built once, cached outside the clone) in the server's models/checkpoints/,
    and a fresh seeded upsampler set for its UNet in models/self_cascade/. Returns (ckpt name, set name)."""
    import comfy.ops
    import tiny_checkpoint
    import torch
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from self_cascade.upsampler import fileformat, modules, taps

    path = tiny_checkpoint.tiny_sdxl_checkpoint(seed=0)
    folder = comfy_server.base_dir / "models" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / tiny_checkpoint.SDXL_FILENAME
    if not link.exists():
        link.symlink_to(path)
    with torch.device("meta"):  # structure only: the taps and the embedding width
        unet = UNetModel(**tiny_checkpoint.SDXL_UNET_CONFIG, operations=comfy.ops.disable_weight_init)
    torch.manual_seed(0)
    uset = modules.UpsamplerSet.create(taps.derive_taps(unet), taps.emb_dim(unet), "SDXL", "light")
    ups = comfy_server.base_dir / "models" / "self_cascade" / "tiny_sdxl_upsamplers.safetensors"
    ups.parent.mkdir(parents=True, exist_ok=True)
    fileformat.save_upsamplers(str(ups), uset)
    return link.name, ups.name


def test_sdxl_workflow_runs_end_to_end_via_cli(comfy_server, info, tiny_sdxl, tmp_path):
    """sdxl_cascade_4096 through the client as shipped (two tuned stages): the stock loader detects the
    tiny checkpoint as SDXL; base 32 px -> 64 -> 128, 2 steps, size conditioning overridden with the base size."""
    from PIL import Image

    ckpt, ups = tiny_sdxl
    proc = run_cli("sdxl_cascade_4096", "--server", comfy_server.url, "--checkpoint", ckpt, "--upsampler", ups,
                   "--width", "32", "--height", "32", "--steps", "2", "--seed", "3", "--prompt", "a small test",
                   "--out", str(tmp_path), "--progress-every", "5")
    log = comfy_server.log()
    assert proc.returncode == 0, proc.stderr[-3000:] + log[-3000:]
    saved = [Path(line) for line in proc.stdout.split()]
    assert len(saved) == 1 and Image.open(saved[0]).size == (128, 128)
    assert "Requested to load SDXL" in log and "clip missing" not in log, log[-3000:]
    assert "override: Positive Prompt.target_width=32" in proc.stderr


@pytest.mark.parametrize("name", ["flux_cascade_2048", "sd3_cascade_2048"])
def test_flow_workflows_pass_validation_and_run_with_a_stand_in_checkpoint(comfy_server, info, tiny_checkpoint, name,
                                                                           tmp_path):
    """No Flux/SD3 weights here. The graphs as shipped (FluxGuidance, EmptySD3LatentImage, the flow K, cfg)
    pass the server's /prompt validation and run end to end through the client with the tiny SD1.5-shaped
    checkpoint standing in: ComfyUI gives an all-zero latent the model's channel count, and SD1.5 ignores
    the guidance value. This checks the wiring, not Flux/SD3 behaviour. 32 -> 64 px, 2 steps."""
    from PIL import Image

    proc = run_cli(name, "--server", comfy_server.url, "--checkpoint", tiny_checkpoint, "--width", "32", "--height",
                   "32", "--steps", "2", "--seed", "3", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:] + comfy_server.log()[-3000:]
    saved = [Path(line) for line in proc.stdout.split()]
    assert len(saved) == 1 and Image.open(saved[0]).size == (64, 64)


def test_loader_nodes_carry_download_entries_the_dialog_can_fetch():
    """properties.models on loader nodes (the frontend's missing-models dialog): name = the node's widget
    value, a Hugging Face URL ending in that name, the models/ folder the loader reads, and a name the dialog
    downloads (.safetensors/.sft: comfyui-frontend-package 1.32.9, MissingModelsWarning.vue, shows any other
    suffix as an error). The official upsampler_only.pth is no entry: the SDXL note links it in full."""
    folders = {"CheckpointLoaderSimple": "checkpoints", "SelfCascadeUpsamplerLoader": "self_cascade"}
    seen = set()
    for name in SHIPPED:
        for node in _ui(name)["nodes"]:
            models = node["properties"].get("models", [])
            if node["type"] == "CheckpointLoaderSimple":
                assert models, f"{name}: {node['type']} has no download entry"
            for m in models:
                assert m["name"] in node["widgets_values"], (name, m)
                assert m["url"].startswith("https://huggingface.co/") and m["url"].endswith("/resolve/main/" + m["name"])
                assert m["directory"] == folders[node["type"]], (name, m)
                assert m["name"].endswith((".safetensors", ".sft")), (name, m)
                seen.add(m["name"])
    assert {"v1-5-pruned-emaonly.safetensors", "sd_xl_base_1.0.safetensors"} <= seen, seen
    sdxl = " ".join(n["widgets_values"][0] for n in _ui("sdxl_cascade_4096")["nodes"] if n["type"] in graph.NOTE_TYPES)
    assert "(https://huggingface.co/NothingSpecialSiri/SelfCascade-SDXL/resolve/main/upsampler_only.pth)" in sdxl
    assert "ComfyUI/models/self_cascade/" in sdxl


REPO_DOCS = "https://github.com/self-cascade/comfyui-self-cascade/blob/main/docs/"


@pytest.mark.parametrize("name", SHIPPED)
def test_saved_layout_keeps_the_rule_and_notes_link_docs_in_full(name):
    """On the sizes the file saves (the browser test checks the frontend's): no two node boxes (title bars
    included) overlap, every node and note lies inside exactly one group, groups do not overlap; no view is
    saved (the frontend fits the graph to the window). Notes name docs by full link to the repository, and
    each of those files exists here."""
    ui = _ui(name)
    assert layout.layout_problems(*layout.ui_boxes(ui)) == []
    assert "ds" not in ui["extra"]
    notes = " ".join(n["widgets_values"][0] for n in ui["nodes"] if n["type"] in graph.NOTE_TYPES)
    assert "docs/" in notes
    for path in re.findall(r"(?<!/blob/main/)\bdocs/[\w./-]+", notes):
        pytest.fail(f"{name}: a note names {path} without the full link ({REPO_DOCS}...)")
    for doc in re.findall(re.escape(REPO_DOCS) + r"([\w.-]+\.md)", notes):
        assert (REPO / "docs" / doc).is_file(), doc


def test_layout_rule_can_fail():
    """The rule flags a node moved onto another, a note pushed out of its group, and groups that overlap."""
    ui = _ui("sdxl_cascade_4096")
    stages = [n for n in ui["nodes"] if n["type"] == "SelfCascadeStage"]
    stages[1]["pos"] = [stages[0]["pos"][0] + 40, stages[0]["pos"][1] + 40]
    note = next(n for n in ui["nodes"] if n["type"] in graph.NOTE_TYPES)
    note["pos"] = [note["pos"][0], note["pos"][1] + 5000]
    ui["groups"][1]["bounding"][0] -= 200
    found = "\n".join(layout.layout_problems(*layout.ui_boxes(ui)))
    assert f"(#{stages[1]['id']}) overlaps" in found or f"overlaps {stages[1]['title']}" in found, found
    assert f"(#{note['id']}) is not inside exactly one group" in found, found
    assert "overlaps group" in found, found


def test_flow_workflows_use_the_k_that_matches_sds_snr_at_700(pack):
    """K for flow models: the pivot is re-noised to the SNR SD has at t=700 (0.090), computed with ComfyUI's
    own model_sampling classes at each family's default shift (SD3: 3.0, FLUX.1 dev: 1.15)."""
    import comfy.model_sampling as ms
    import comfy.supported_models as sm

    class Discrete(ms.ModelSamplingDiscrete, ms.EPS):
        pass

    class Flow(ms.ModelSamplingDiscreteFlow, ms.CONST):
        pass

    class Flux(ms.ModelSamplingFlux, ms.CONST):
        pass

    sd = Discrete(sm.SD15({}))
    target = 1.0 / float(sd.percent_to_sigma(1 - 0.7)) ** 2
    assert abs(target - 0.090) < 0.001
    sd3, flux = Flow(sm.SD3({})), Flux(sm.Flux({}))
    assert float(sd3.shift) == 3.0 and abs(float(flux.shift) - 1.15) < 1e-6
    for name, sampling in (("sd3_cascade_2048", sd3), ("flux_cascade_2048", flux)):
        (stage,) = [n for n in _api(name).values() if n["class_type"] == "SelfCascadeStage"]
        s = float(sampling.percent_to_sigma(1 - stage["inputs"]["K"] / 1000))
        snr = ((1 - s) / s) ** 2
        assert abs(snr / target - 1) < 0.01, (name, stage["inputs"]["K"], snr, target)
        s700 = float(sampling.percent_to_sigma(0.3))
        assert ((1 - s700) / s700) ** 2 < target / 4, "K=700 would re-noise much harder on a flow model"
        assert stage["inputs"]["cfg"] == (1.0 if name.startswith("flux") else 4.5)


def test_train_workflow_runs_on_real_server_via_cli(comfy_server, info, tiny_checkpoint, tmp_path):
    """The training workflow on a folder under the server's input/ (2 seeded images), 2 steps at 64 px."""
    import numpy as np
    from PIL import Image

    folder = comfy_server.base_dir / "input" / "sc_train_test"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    save_name = f"trained_{tmp_path.name}"
    sets = {"folder": "sc_train_test", "width": 64, "height": 64, "steps": 2, "checkpoint_every": 0,
            "save_name": save_name}
    args = [a for k, v in sets.items() for a in ("--set", f"Train Upsamplers.{k}={v}")]
    proc = run_cli("train_upsamplers", "--server", comfy_server.url, "--checkpoint", tiny_checkpoint,
                   "--out", str(tmp_path), *args)
    assert proc.returncode == 0, proc.stderr[-3000:] + comfy_server.log()[-3000:]
    saved = [Path(line) for line in proc.stdout.split()]
    assert len(saved) == 1 and Image.open(saved[0]).size[0] > 64  # the loss curve
    assert (comfy_server.base_dir / "models" / "self_cascade" / f"{save_name}.safetensors").is_file()


def test_server_lists_workflows_as_templates(comfy_server, client):
    """ComfyUI serves the pack's workflows/ folder in its templates browser (with the thumbnails)."""
    import urllib.request

    listing = client._request("/workflow_templates")
    assert sorted(listing.get("self_cascade", [])) == sorted(SHIPPED), listing
    for suffix in (".json", ".jpg"):
        url = f"{comfy_server.url}/api/workflow_templates/self_cascade/sd15_cascade_2048{suffix}"
        with urllib.request.urlopen(url, timeout=30) as r:
            assert r.read() == (WF / f"sd15_cascade_2048{suffix}").read_bytes()
