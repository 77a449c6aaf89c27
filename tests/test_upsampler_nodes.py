"""The tuned nodes (loader, apply), SelfCascadeStage's upsamplers input, and the cost benchmark smoke run."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import tiny_models
import torch
from tiny_models import run_stage

REPO = Path(__file__).resolve().parent.parent


def fresh(model, variant="light"):
    from self_cascade.nodes.patch import model_family
    from self_cascade.upsampler.modules import UpsamplerSet
    from self_cascade.upsampler.taps import derive_taps, emb_dim

    unet = model.get_model_object("diffusion_model")
    return UpsamplerSet.create(derive_taps(unet), emb_dim(unet), model_family(model), variant)


def test_loader_and_apply_nodes(model_folder):
    from self_cascade.nodes.common import SelfCascadeError
    from self_cascade.nodes.pivot import upsample_pivot
    from self_cascade.nodes.upsamplers import SelfCascadeApplyUpsamplers, SelfCascadeUpsamplerLoader
    from self_cascade.upsampler.fileformat import save_upsamplers

    model = tiny_models.tiny_sd15(0)
    save_upsamplers(str(model_folder / "mine.safetensors"), fresh(model))
    (model_folder / "broken.safetensors").write_bytes(b"garbage!" * 4)
    schema = SelfCascadeUpsamplerLoader.define_schema()
    assert "mine.safetensors" in schema.inputs[0].options
    uset = SelfCascadeUpsamplerLoader.execute("mine.safetensors").result[0]
    with pytest.raises(SelfCascadeError, match="'broken.safetensors' is not a safetensors file"):
        SelfCascadeUpsamplerLoader.execute("broken.safetensors")
    with pytest.raises(SelfCascadeError, match="'gone.safetensors' is not in models/self_cascade"):
        SelfCascadeUpsamplerLoader.execute("gone.safetensors")

    prev = {"samples": torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))}
    pivot_latent = upsample_pivot(prev, 2.0, "bicubic")  # carries the clean original under self_cascade_pivot
    a = SelfCascadeApplyUpsamplers.execute(model, uset, pivot_latent, 1.0, 100.0).result[0]
    b = SelfCascadeApplyUpsamplers.execute(model, uset, prev, 1.0, 100.0).result[0]
    assert a is not model and b is not model
    assert torch.equal(a.wrappers["diffusion_model"]["self_cascade"][0].pivot, prev["samples"])
    assert torch.equal(b.wrappers["diffusion_model"]["self_cascade"][0].pivot, prev["samples"])
    with pytest.raises(SelfCascadeError, match="'upsamplers' is a str"):
        SelfCascadeApplyUpsamplers.execute(model, "nope", prev, 1.0, 100.0)
    with pytest.raises(SelfCascadeError, match="'pivot' is not a LATENT"):
        SelfCascadeApplyUpsamplers.execute(model, uset, {}, 1.0, 100.0)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_cascade_stage_uses_the_upsamplers(pack, family):
    """SelfCascadeStage's path (nodes.cascade.cascade_stage) with a set: strength 0 == no upsamplers."""

    sdxl = family == "sdxl"
    model = tiny_models.tiny_sdxl(0) if sdxl else tiny_models.tiny_sd15(0)
    from self_cascade.nodes.managed import upsampler_patcher

    uset = upsampler_patcher(fresh(model, "official"))  # what the loader node returns
    calls = []
    uset.model.ups[0].register_forward_hook(lambda m, a, out: calls.append(tuple(out.shape)))
    latent = {"samples": torch.randn(1, 4, 4, 6, generator=torch.Generator().manual_seed(1))}
    kw = dict(scale=2.0, upscale_method="bicubic", seed=0, steps=6, cfg=4.0, sampler_name="euler",
              scheduler="normal", K=700.0, disable_pbar=True)
    pos, neg = tiny_models.conditioning(1, pooled=sdxl), tiny_models.conditioning(2, pooled=sdxl)
    plain = run_stage(model, pos, neg, latent, **kw)["samples"]
    zero = run_stage(model, pos, neg, latent, upsamplers=uset, strength=0.0, **kw)["samples"]
    assert torch.equal(plain, zero) and calls == []
    tuned = run_stage(model, pos, neg, latent, upsamplers=uset, strength=1.0, **kw)["samples"]
    assert calls and not torch.equal(plain, tuned) and torch.isfinite(tuned).all()
    assert tuned.shape == (1, 4, 8, 12)


def test_cost_upsamplers_benchmark_quick(pack, capsys):
    mod = importlib.import_module("self_cascade.benchmark.cost_upsamplers")
    threads = torch.get_num_threads()
    try:
        results = mod.main(["--quick", "--repeats", "1"])
    finally:
        torch.set_num_threads(threads)
    assert [r["name"].split()[0] for r in results] == ["plain", "official", "light"]
    assert results[0]["ratio"] == 1.0 and all(r["s_per_step"] > 0 for r in results)
    for r in results[1:]:  # each ratio is that row's time per step over the plain UNet's, as recorded
        assert r["ratio"] == pytest.approx(r["s_per_step"] / results[0]["s_per_step"], rel=1e-3)
    assert "| light" in capsys.readouterr().out


def test_shared_ranges_are_one_constant(pack):
    """strength, end_timestep and K have the same widget range on every node that offers them (nodes/common.py);
    the larger old maximum is kept so saved workflows stay valid (Stage strength was 2.0, Apply 4.0)."""
    from self_cascade.nodes import common
    from self_cascade.nodes.renoise import SelfCascadeRenoise
    from self_cascade.nodes.stage import SelfCascadeStage
    from self_cascade.nodes.upsamplers import SelfCascadeApplyUpsamplers

    def inputs(node):
        return {i.id: i for i in node.define_schema().inputs}

    stage, apply, renoise = inputs(SelfCascadeStage), inputs(SelfCascadeApplyUpsamplers), inputs(SelfCascadeRenoise)
    assert stage["strength"].max == apply["strength"].max == common.STRENGTH_MAX == 4.0
    assert stage["end_timestep"].max == apply["end_timestep"].max == common.END_TIMESTEP_MAX == 1000.0
    assert stage["end_timestep"].default == apply["end_timestep"].default == common.DEFAULT_END_TIMESTEP == 100.0
    assert (stage["K"].min, stage["K"].max) == (renoise["K"].min, renoise["K"].max) == (1.0, 999.0)
    assert stage["K"].tooltip == renoise["K"].tooltip == common.K_TOOLTIP
