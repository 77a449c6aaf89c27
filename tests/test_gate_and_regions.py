"""The gate resolved when sampling starts, one end_timestep range, and the pivot region of crops and tiles,
on tiny real ComfyUI models sampled through ``comfy.sample.sample`` (KSampler's path) with ComfyUI's own
ModelSamplingContinuousEDM and ConditioningSetArea nodes."""
from __future__ import annotations

import logging

import pytest
import tiny_models
import torch
import torch.nn.functional as F


def managed_set(model):
    from self_cascade.nodes.managed import upsampler_patcher
    from self_cascade.nodes.patch import model_family
    from self_cascade.upsampler.modules import UpsamplerSet
    from self_cascade.upsampler.taps import derive_taps, emb_dim

    unet = model.get_model_object("diffusion_model")
    uset = UpsamplerSet.create(derive_taps(unet), emb_dim(unet), model_family(model), "light")
    tiny_models.seed_weights(uset, 3, scale=0.5)
    return upsampler_patcher(uset.eval())


def sample(model, h=8, w=12, cfg=4.0, steps=4, positive=None, seed=0):
    import comfy.sample

    noise = torch.randn(1, 4, h, w, generator=torch.Generator().manual_seed(seed))
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "normal", positive or tiny_models.conditioning(1),
                               tiny_models.conditioning(2), torch.zeros_like(noise), denoise=1.0, disable_pbar=True,
                               seed=seed)


def edm(model):
    from comfy_extras.nodes_model_advanced import ModelSamplingContinuousEDM

    return ModelSamplingContinuousEDM().patch(model, "eps", 120.0, 0.002)[0]


def test_gate_follows_a_model_sampling_node_applied_after_the_patch(pack):
    """EDM's raw timesteps are 0.25 log sigma (about -1.6..1.2): a gate mapped on the SD schedule when Apply
    Upsamplers ran (raw 100) never opens there. Resolved when sampling starts it opens above end_timestep 100,
    and end_timestep 1000 (the top of the schedule) keeps every step plain."""
    from self_cascade.nodes.patch import apply_upsamplers

    model = tiny_models.tiny_sd15(0)
    managed = managed_set(model)
    pivot = torch.randn(1, 4, 4, 6, generator=torch.Generator().manual_seed(2))
    plain = sample(edm(model))
    after = sample(edm(apply_upsamplers(model, managed, pivot, 1.0, 100.0)))
    assert not torch.equal(after, plain), "the patch never acted under a model-sampling node applied after it"
    before = sample(apply_upsamplers(edm(model), managed, pivot, 1.0, 100.0))
    assert torch.equal(after, before), "the order of the two patches must not matter"
    assert torch.equal(sample(edm(apply_upsamplers(model, managed, pivot, 1.0, 1000.0))), plain)


def test_end_timestep_has_one_range_everywhere(pack, tiny_model):
    """0..1000 on the Stage widget, in check_end_timestep and in Apply Upsamplers (which now checks strength and
    end_timestep itself, not only through its widget's limits); 1000 = the plain model."""
    from self_cascade.nodes.checks import check_end_timestep
    from self_cascade.nodes.common import END_TIMESTEP_MAX, SelfCascadeError
    from self_cascade.nodes.upsamplers import SelfCascadeApplyUpsamplers
    from tiny_models import run_stage

    assert END_TIMESTEP_MAX == 1000.0
    assert check_end_timestep(1000.0) == 1000.0 and check_end_timestep(0.0) == 0.0
    for bad in (-1.0, 1000.5, float("nan")):
        with pytest.raises(SelfCascadeError, match="end_timestep"):
            check_end_timestep(bad)
    managed = managed_set(tiny_model)
    latent = {"samples": torch.randn(1, 4, 4, 6, generator=torch.Generator().manual_seed(1))}
    with pytest.raises(SelfCascadeError, match="'strength' = -1"):
        SelfCascadeApplyUpsamplers.execute(tiny_model, managed, latent, -1.0, 100.0)
    with pytest.raises(SelfCascadeError, match="'end_timestep' = 1001"):
        SelfCascadeApplyUpsamplers.execute(tiny_model, managed, latent, 1.0, 1001.0)
    kw = dict(scale=2.0, upscale_method="bicubic", seed=0, steps=4, cfg=2.0, sampler_name="euler",
              scheduler="normal", K=700.0)
    cond = tiny_models.conditioning(1)
    top = run_stage(tiny_model, cond, cond, latent, managed, end_timestep=1000.0, **kw)["samples"]
    assert torch.equal(top, run_stage(tiny_model, cond, cond, latent, **kw)["samples"])


def record_pivots(model) -> list[torch.Tensor]:
    """The inputs of the UNet's first conv: x of every model call and the pivot of every pivot pass."""
    seen: list[torch.Tensor] = []
    conv = model.get_model_object("diffusion_model").input_blocks[0][0]
    conv.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    return seen


@pytest.mark.parametrize("col", [4, 1])
def test_area_conditioning_gets_its_part_of_the_pivot(pack, col):
    """ComfyUI's ConditioningSetArea: the model is called on an 8x8 crop at column ``col`` of the 8x12 latent.
    The pivot pass of that call must see the pivot's matching part (columns col/2.. at half size), not the
    whole pivot squeezed into 4x4. Even offset: exactly that slice. Odd offset: the nearest x2 pivot cropped
    there and pooled 2x2 (half a cell between two pivot columns)."""
    from self_cascade.nodes.patch import apply_upsamplers

    from nodes import ConditioningSetArea

    model = tiny_models.tiny_sd15(0)
    pivot = torch.randn(1, 4, 4, 6, generator=torch.Generator().manual_seed(2))
    patched = apply_upsamplers(model, managed_set(model), pivot, 1.0, 100.0)
    area = ConditioningSetArea().append(tiny_models.conditioning(1), 64, 64, 8 * col, 0, 1.0)[0]
    seen = record_pivots(model)
    out = sample(patched, positive=area)
    assert torch.isfinite(out).all()
    scaled = model.model.process_latent_in(pivot)
    up = scaled.repeat_interleave(2, -1).repeat_interleave(2, -2)[..., :, col:col + 8]
    want = F.avg_pool2d(up, 2)
    assert col % 2 or torch.equal(want, scaled[..., :, col // 2:col // 2 + 4])
    crops = [s for s in seen if tuple(s.shape[-2:]) == (4, 4)]
    assert crops, "no pivot pass for the area call"
    for s in crops:
        torch.testing.assert_close(s, want.expand_as(s), rtol=0, atol=1e-6)
    assert all(torch.equal(s, scaled.expand_as(s)) for s in seen if tuple(s.shape[-2:]) == (4, 6))


def test_a_tile_smaller_than_the_pivot_runs_plain_with_one_warning(pack, caplog):
    """A tiled sampler that runs whole sampling passes on tiles (Ultimate SD Upscale, TiledKSampler) gives the
    model a 'full' latent smaller than the pivot: its place in the image is unknown, so the upsamplers stay
    off for it (exactly the plain model), with one warning per run instead of a resized whole pivot."""
    from self_cascade.nodes.patch import apply_upsamplers

    model = tiny_models.tiny_sd15(0)
    pivot = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    patched = apply_upsamplers(model, managed_set(model), pivot, 1.0, 100.0)
    with caplog.at_level(logging.WARNING):
        tile = sample(patched, 6, 6)
    assert torch.equal(tile, sample(model, 6, 6))
    warnings = [r for r in caplog.records if "a tile of a tiled sampler" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in caplog.records]


def test_a_crop_that_conds_do_not_follow_is_refused_per_call(pack, caplog):
    """A model function wrapper that calls the model on a part of x without cropping the conds (so the grid
    does not say which part): the upsamplers are off for those calls, with one warning."""
    from self_cascade.nodes.patch import apply_upsamplers

    model = tiny_models.tiny_sd15(0)
    managed = managed_set(model)
    calls = []
    managed.model.ups[0].register_forward_hook(lambda m, a, o: calls.append(1))
    patched = apply_upsamplers(model, managed, torch.randn(1, 4, 4, 6), 1.0, 100.0)

    def left_half(apply_model, args):
        x, c = args["input"], dict(args["c"])
        out = torch.zeros_like(x)
        out[..., :6] = apply_model(x[..., :6], args["timestep"], **c)
        return out

    patched.set_model_unet_function_wrapper(left_half)
    with caplog.at_level(logging.WARNING):
        sample(patched)
    assert not calls
    assert len([r for r in caplog.records if "does not say which part" in r.getMessage()]) == 1
