"""The tuning-free stage on video latents (5-D): a tiny random Wan 2.1 model (a video family ComfyUI supports)."""
from __future__ import annotations

import pytest
import tiny_models
import torch
from tiny_models import run_stage

STAGE = dict(scale=2.0, upscale_method="bicubic", seed=3, steps=6, cfg=1.0, sampler_name="euler",
             scheduler="simple", K=700.0)


@pytest.fixture(scope="module")
def wan(pack):
    return tiny_models.tiny_wan21(seed=0)


def test_stage_on_video_latent_keeps_frames_and_doubles_each_side(wan):
    cond = tiny_models.wan_conditioning(1)
    base = {"samples": torch.randn(1, 16, 3, 4, 6, generator=torch.Generator().manual_seed(0))}
    out = run_stage(wan, cond, cond, base, **STAGE)["samples"]
    assert out.shape == (1, 16, 3, 8, 12)
    assert torch.isfinite(out).all()
    again = run_stage(wan, cond, cond, base, **STAGE)["samples"]
    other_seed = run_stage(wan, cond, cond, base, **{**STAGE, "seed": 4})["samples"]
    assert torch.equal(out, again) and not torch.allclose(out, other_seed)


def test_video_pivot_is_what_the_stage_denoises_from(wan):
    """At a tiny K almost nothing is added: the output stays close to the upsampled pivot, frame by frame."""
    from self_cascade.upsampler.pivot import resize_latent

    cond = tiny_models.wan_conditioning(2)
    base = torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(5))
    pivot = resize_latent(base, (8, 8), "bicubic")
    low_k = run_stage(wan, cond, cond, {"samples": base}, **{**STAGE, "K": 20.0})["samples"]
    high_k = run_stage(wan, cond, cond, {"samples": base}, **{**STAGE, "K": 950.0})["samples"]
    err_low = (low_k - pivot).abs().mean().item()
    err_high = (high_k - pivot).abs().mean().item()
    assert err_low < 0.5 * err_high, (err_low, err_high)


def test_k_mode_auto_on_a_video_model(wan):
    """K_mode auto on Wan 2.1 (flow, shift 8): the Stage node runs the fixed stage at the equal-SNR K (about
    294 for 700 in SD1.x units), not at 700."""
    from self_cascade.nodes.stage import SelfCascadeStage
    from self_cascade.nodes.timesteps import equal_snr_k

    cond = tiny_models.wan_conditioning(3)
    base = {"samples": torch.randn(1, 16, 2, 4, 4, generator=torch.Generator().manual_seed(6))}
    inputs = dict(STAGE)
    k = equal_snr_k(wan.get_model_object("model_sampling"), 700.0)
    assert round(k) == 294

    def stage(**over):
        return SelfCascadeStage.execute(wan, cond, cond, base, **{**inputs, **over}).result[0]["samples"]

    auto = stage(K_mode="auto")
    assert torch.equal(auto, stage(K=k)) and not torch.allclose(auto, stage())
