"""benchmark/user_path.py on the CPU at tiny sizes, so the one GPU run cannot fail on a typo: it builds its own
(stripped SD1.5) checkpoint in a subprocess, starts the real ComfyUI server with the pack and the measurement
probe, queues the shipped workflows through the shipped client, and writes its table; budget and CPU-only
configurations are skipped and say why. The checkpoint layouts at full size are checked against ComfyUI's own
model detection (on the meta device: no memory), and the official-layout .pth against the pack's converter.
Figures are never asserted (they are the benchmark's output); that the probe wrapped the VAE decode is.
"""
from __future__ import annotations

import importlib
import json

import pytest
import torch


@pytest.fixture(scope="module")
def up(pack):
    return importlib.import_module("self_cascade.benchmark.user_path")


def test_user_path_smoke_queues_the_shipped_workflows(up, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    res = up.main(["--smoke", "--out", str(out), "--work", str(work), "--configs", "default,lowvram",
                   "--workflows", "sd15_cascade_2048,sd15_image_cascade_2048", "--budget-s", "400"])
    assert res["builds"]["sd15"]["params"] > 2e8 and (work / "models" / "checkpoints" / up.FILES["sd15"]).is_file()
    rows = {(r["config"], r["workflow"]): r for r in res["rows"]}
    assert set(rows) == {("default", up.SD15), ("default", up.IMAGE), ("lowvram", up.SD15)}
    for wf in (up.SD15, up.IMAGE):
        r = rows[("default", wf)]
        assert r["status"] == "done", r
        assert r["image"] == "128x128" and r["steps"] == 2 and r["time_to_image_s"] > 0
        assert r["decode_s"] > 0  # the probe in the server wrapped the VAE decode the workflow ran
        assert r["sampling_peak_mib"] is None and r["smi_peak_mib"] is None  # no CUDA: nothing is invented
    low = rows[("lowvram", up.SD15)]
    assert low["status"] == "skipped" and "--lowvram" in low["note"]
    assert [s["config"] for s in res["servers"]] == ["default"]
    assert json.loads((out / "results.json").read_text())["rows"] == res["rows"]
    table = (out / "table.md").read_text()
    assert table.startswith("> **SMOKE RUN**") and f"| default | {up.IMAGE} | 2 | done |" in table


def test_user_path_over_budget_skips_and_says_so(up, tmp_path):
    res = up.main(["--smoke", "--out", str(tmp_path), "--work", str(tmp_path / "w"), "--configs", "default,8gb",
                   "--sd15-checkpoint", str(tmp_path / "x.safetensors"), "--budget-s", "1"])
    assert res["servers"] == [] and res["rows"]
    assert all(r["status"] == "skipped" and "over budget" in r["note"] for r in res["rows"])
    assert "over budget" in (tmp_path / "table.md").read_text()


@pytest.mark.parametrize("family", ["SD15", "SDXL"])
def test_full_size_checkpoint_layout_is_what_comfyui_detects(pack, family):
    """Every key of the full-size file, as meta tensors: ComfyUI's detection finds the family and the real UNet
    config; the text encoder keys are those ComfyUI's loader maps back onto its own CLIP model."""
    import comfy.model_detection
    from self_cascade.benchmark.perf import checkpoints, models

    shapes, fixed = checkpoints.checkpoint_layout(family, "full")
    sd = {k: torch.empty(s, device="meta", dtype=torch.float16) for k, s in shapes.items()} | fixed
    config = comfy.model_detection.model_config_from_unet(sd, "model.diffusion_model.")
    assert type(config).__name__ == family
    want = models.SPECS[family.lower()]["unet"]
    for key in ("model_channels", "channel_mult", "transformer_depth", "context_dim", "adm_in_channels"):
        assert config.unet_config[key] == want[key], key
    unet_params = sum(torch.Size(s).numel() for k, s in shapes.items() if k.startswith("model.diffusion_model."))
    assert unet_params == {"SD15": 859_520_964, "SDXL": 2_567_463_684}[family]
    clip = config.process_clip_state_dict({k: v for k, v in sd.items() if not k.startswith(("model.", "first_stage"))})
    with torch.device("meta"):
        ours = config.clip_target().clip(device="meta").state_dict()
    missing = {k for k in ours if k not in clip and not k.endswith(("logit_scale", "text_projection.weight"))}
    assert not missing, sorted(missing)[:5]


def test_official_layout_pth_is_read_by_the_packs_converter(pack, tmp_path):
    from self_cascade.benchmark.perf import checkpoints
    from self_cascade.upsampler import convert

    info = checkpoints.write_official_pth(tmp_path / "upsampler_only.pth")
    uset = convert.load_official_pth(str(tmp_path / "upsampler_only.pth"))
    assert info["params"] == uset.num_params() == 145_457_280 and uset.info.variant == "official"
