"""SelfCascadeUntrainedUpsamplers: a fresh set (nearest x2 per tap) for the connected model, no file needed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import tiny_models
import torch
from tiny_models import run_stage

REPO = Path(__file__).resolve().parent.parent
STAGE = dict(scale=2.0, upscale_method="bicubic", seed=7, steps=8, cfg=2.0, sampler_name="euler",
             scheduler="normal", K=700.0)


@pytest.mark.parametrize("builder", ["tiny_sd15", "tiny_sdxl"])
def test_fresh_set_fits_the_model_and_is_nearest_x2(pack, builder):
    from self_cascade.nodes.patch import model_family
    from self_cascade.nodes.untrained import SelfCascadeUntrainedUpsamplers
    from self_cascade.upsampler.fileformat import check_compatible
    from self_cascade.upsampler.modules import up2
    from self_cascade.upsampler.taps import derive_taps, emb_dim

    model = getattr(tiny_models, builder)(seed=0)
    managed, strength = SelfCascadeUntrainedUpsamplers.execute(model).result
    uset = managed.model  # a ModelPatcher over the set, as every node passes the set on
    unet = model.model.diffusion_model
    check_compatible(uset, derive_taps(unet), emb_dim(unet), model_family(model))  # raises if it does not fit
    assert uset.info.extra.get("untrained") is True and strength > 0
    g = torch.Generator().manual_seed(1)
    for i, tap in enumerate(uset.taps):
        f = torch.randn(2, tap.channels, 3, 5, generator=g)
        emb = torch.randn(2, uset.info.emb_dim, generator=g)
        assert torch.equal(uset(i, f, emb), up2(f)), f"tap {tap.block} is not exactly nearest x2"
    again, _ = SelfCascadeUntrainedUpsamplers.execute(model).result
    a, b = uset.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "the fresh set is not reproducible"


def test_tuned_stage_with_the_untrained_set_changes_the_result(pack, tiny_model):
    from self_cascade.nodes.untrained import SelfCascadeUntrainedUpsamplers

    cond = tiny_models.conditioning(3)
    base = {"samples": torch.randn(1, 4, 4, 6, generator=torch.Generator().manual_seed(0))}
    uset, strength = SelfCascadeUntrainedUpsamplers.execute(tiny_model).result
    plain = run_stage(tiny_model, cond, cond, base, **STAGE)["samples"]
    tuned = run_stage(tiny_model, cond, cond, base, uset, **STAGE, strength=strength)["samples"]
    off = run_stage(tiny_model, cond, cond, base, uset, **STAGE, strength=0.0)["samples"]
    assert tuned.shape == plain.shape == (1, 4, 8, 12) and torch.isfinite(tuned).all()
    assert (tuned - plain).abs().max() > 1e-3, "the untrained set had no effect"
    assert torch.equal(off, plain), "strength 0 must be the plain stage"


def test_non_unet_model_gets_a_clear_error(pack):
    from self_cascade.nodes.common import SelfCascadeError
    from self_cascade.nodes.untrained import SelfCascadeUntrainedUpsamplers

    with pytest.raises(SelfCascadeError, match="not an SD-style UNet.*tuning-free"):
        SelfCascadeUntrainedUpsamplers.execute(tiny_models.tiny_wan21(seed=0))


def test_marked_experimental(pack):
    from self_cascade.nodes.untrained import SelfCascadeUntrainedUpsamplers

    s = SelfCascadeUntrainedUpsamplers.define_schema()
    assert s.is_experimental and "experimental" in s.display_name and "untrained" in s.display_name
    assert "unverified on Stable Diffusion" in s.description and all(i.tooltip for i in s.inputs)
    from self_cascade.nodes.untrained import UNTRAINED_STRENGTH

    page = (REPO / "web" / "docs" / "SelfCascadeUntrainedUpsamplers.md").read_text()
    assert f"output, {UNTRAINED_STRENGTH:g})" in page, "the help page states another recommended strength"


def _sd15_upsamplers_workflow_without_a_file(ckpt: str) -> dict:
    """The shipped SD1.5 upsampler workflow (API twin) as shipped: the untrained node feeds both stages'
    upsamplers and its strength output their strength; made tiny (32x48 px base, few steps). The final
    latent is saved instead of decoded (the decode path of this workflow is run by tests/test_workflows.py)."""
    prompt = json.loads((REPO / "workflows" / "api" / "sd15_cascade_2048_upsamplers.json").read_text())
    (loader,) = [k for k, v in prompt.items() if v["class_type"] == "SelfCascadeUntrainedUpsamplers"]
    (ckpt_node,) = [k for k, v in prompt.items() if v["class_type"] == "CheckpointLoaderSimple"]
    assert prompt[loader]["inputs"] == {"model": [ckpt_node, 0]}
    prompt[ckpt_node]["inputs"]["ckpt_name"] = ckpt
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "EmptyLatentImage":
            inputs.update(width=32, height=48)
        if node["class_type"] in ("KSampler", "SelfCascadeStage"):
            inputs["steps"] = 3
        if node["class_type"] == "SelfCascadeStage":
            assert inputs["upsamplers"] == [loader, 0] and inputs["strength"] == [loader, 1]
    (decode,) = [k for k, v in prompt.items() if v["class_type"] == "VAEDecodeTiled"]
    (save,) = [k for k, v in prompt.items() if v["class_type"] == "SaveImage"]
    last_stage = prompt[decode]["inputs"]["samples"]
    del prompt[decode]
    prompt[save] = {"class_type": "SaveLatent", "inputs": {"samples": last_stage, "filename_prefix": "untrained"}}
    return prompt


def test_sd15_upsamplers_workflow_runs_without_a_trained_file(comfy_server, client, tiny_checkpoint):
    import safetensors.torch

    entry = client.run(_sd15_upsamplers_workflow_without_a_file(tiny_checkpoint), timeout=300)
    (files,) = [v["latents"] for v in entry["outputs"].values() if "latents" in v]
    path = comfy_server.base_dir / "output" / files[0]["subfolder"] / files[0]["filename"]
    t = safetensors.torch.load_file(str(path))["latent_tensor"]
    assert tuple(t.shape) == (1, 4, 24, 16) and torch.isfinite(t).all() and t.std() > 0.01
