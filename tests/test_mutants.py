"""Tests aimed at one-line bugs the rest of the suite let through (each was seen to fail on its mutant):
the fsync before the rename, writing straight to the final path, the training target of each
parameterisation, the range of the training timestep, the part of the schedule a stage runs, and
the plan's rounding multiple."""
from __future__ import annotations

import math
import os

import pytest
import tiny_models
import torch

# --- atomic_write ---------------------------------------------------------------------------------

def test_the_temp_file_is_fsynced_before_the_rename(pack, tmp_path, monkeypatch):
    """The data must be on disk before the rename makes it the file: an fsync of the very file that
    is renamed (same inode), before os.replace."""
    from self_cascade.upsampler.checkpoint import atomic_write

    events: list[tuple[str, int]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.fstat(fd).st_ino))
        return real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.stat(src).st_ino))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    atomic_write(str(tmp_path / "f.bin"), lambda tmp: open(tmp, "wb").write(b"data"))
    renames = [i for i, e in enumerate(events) if e[0] == "replace"]
    assert len(renames) == 1, events
    moved = events[renames[0]][1]
    assert ("fsync", moved) in events[: renames[0]], f"the renamed file was not fsynced before the rename: {events}"


def test_the_writer_gets_a_temp_path_beside_the_target(pack, tmp_path):
    """Never the final path: a reader of the final path sees the old file until the rename."""
    from self_cascade.upsampler.checkpoint import atomic_write

    final = tmp_path / "set.safetensors"
    final.write_bytes(b"old")
    seen = {}

    def write(tmp):
        seen["tmp"] = tmp
        with open(tmp, "wb") as fh:
            fh.write(b"new")
        seen["during"] = final.read_bytes()

    atomic_write(str(final), write)
    assert os.path.dirname(os.path.abspath(seen["tmp"])) == str(tmp_path), "temp file on another folder/drive"
    assert os.path.abspath(seen["tmp"]) != str(final) and seen["during"] == b"old"
    assert final.read_bytes() == b"new" and os.listdir(tmp_path) == ["set.safetensors"]


# --- the training target (Algorithm 1 for eps; the matching target for v and flow) -------------

@pytest.mark.parametrize("family", ["eps", "v", "flow"])
def test_loss_target_matches_an_independent_computation(pack, family):
    """pred must be the network's raw output and target what that output should have been:
    eps -> the noise; v (sigma_data 1) -> (eps - sigma x0) / sqrt(1 + sigma^2) (Salimans & Ho's
    alpha eps - sigma_vp x0); flow -> eps - x0. x_t and D(x_t) come from ComfyUI's own classes."""
    from self_cascade.nodes.training.loop import loss_target

    model = {"eps": tiny_models.tiny_sd15, "v": tiny_models.tiny_sd21v, "flow": tiny_models.tiny_flow}[family](0)
    ms = model.get_model_object("model_sampling")
    g = torch.Generator().manual_seed(4)
    x0, eps, out = (torch.randn(3, 4, 5, 6, generator=g, dtype=torch.float64) for _ in range(3))
    sigma = torch.tensor([0.3, 0.9, 0.97] if family == "flow" else [0.5, 2.0, 9.0], dtype=torch.float64)
    s = sigma.view(-1, 1, 1, 1)
    xt = ms.noise_scaling(sigma, eps, x0, False)
    denoised = ms.calculate_denoised(sigma, out, xt)  # what the sampler got from the network output `out`
    if family == "eps":
        assert torch.allclose(xt, x0 + s * eps)
        want = eps
    elif family == "v":
        assert float(ms.sigma_data) == 1.0
        assert torch.allclose(xt, x0 + s * eps)
        want = (eps - s * x0) / torch.sqrt(1 + s ** 2)
    else:
        assert torch.allclose(xt, s * eps + (1 - s) * x0)
        want = eps - x0
    pred, target = loss_target(ms)(ms, xt, denoised, x0, sigma)
    assert torch.allclose(pred, out, atol=1e-9), "pred is not the network's output"
    assert torch.allclose(target, want, atol=1e-9), "wrong training target"
    # and the target is what a perfect network would output: it reproduces x0 through ComfyUI's formula
    assert torch.allclose(ms.calculate_denoised(sigma, want, xt), x0, atol=1e-9)


# --- the training timestep: t ~ U{floor(end_timestep)+1 .. K} -----------------------------------

@pytest.mark.parametrize("end_timestep, K", [(100.0, 700.0), (650.5, 660.0), (0.0, 3.0)])
def test_training_timesteps_cover_exactly_the_open_closed_range(pack, end_timestep, K):
    from self_cascade.nodes.training import TrainConfig
    from self_cascade.nodes.training.pairs import BatchSampler, EncodedImage

    cfg = TrainConfig(width=64, height=64, scale=2.0, batch_size=64, K=K, end_timestep=end_timestep, seed=0)
    (th, tw), (ph, pw) = cfg.latent_sizes()
    items = [EncodedImage(x0=torch.zeros(4, th, tw), pivot=torch.zeros(4, ph, pw), cond=0)]
    draw = BatchSampler(items, cfg, None, lambda x: x, torch.Generator().manual_seed(0))
    t = torch.cat([draw().timesteps for _ in range(100)])
    lo, hi = math.floor(end_timestep) + 1, int(K)
    assert torch.equal(t, t.round()), "timesteps are whole numbers"
    assert int(t.min()) == lo and int(t.max()) == hi, (t.min(), t.max(), lo, hi)
    assert set(t.long().tolist()) == set(range(lo, hi + 1)) or hi - lo > 100  # small ranges: every value drawn


# --- a stage runs only the part of the schedule below K ------------------------------------------

def _sampler_custom(model, latent, sigmas, cfg, cond):
    """The real SamplerCustom node (comfy_extras.nodes_custom_sampler), its own noise disabled."""
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import SamplerCustom

    out = SamplerCustom.execute(model, False, 0, cfg, cond, cond, comfy.samplers.sampler_object("euler"), sigmas, latent)
    return out.result[0]["samples"]


@pytest.mark.parametrize("family", ["eps", "flow"])
def test_stage_equals_pivot_renoise_and_sampler_custom_over_the_rest(pack, family):
    """cascade_stage == Pivot Upsample -> Renoise -> SamplerCustom(add_noise off) over the SIGMAS
    Renoise returns, whose first entry is sigma at K (not the top of the schedule)."""
    from self_cascade.nodes.pivot import upsample_pivot
    from self_cascade.nodes.renoise import renoise_latent
    from self_cascade.nodes.timesteps import schedule_sigma

    model = (tiny_models.tiny_sd15 if family == "eps" else tiny_models.tiny_flow)(0)
    cond = tiny_models.conditioning(3)
    base = {"samples": torch.randn(1, 4, 4, 6, generator=torch.Generator().manual_seed(2))}
    stage = tiny_models.run_stage(model, cond, cond, base, scale=2.0, upscale_method="bicubic", seed=5, steps=10,
                                  cfg=2.0, sampler_name="euler", scheduler="normal", K=700.0)["samples"]
    pivot = upsample_pivot(base, 2.0, "bicubic")
    renoised, sigmas = renoise_latent(model, pivot, 700.0, 5, 10, "normal")
    ms = model.get_model_object("model_sampling")
    assert float(sigmas[0]) == pytest.approx(schedule_sigma(ms, 700.0), rel=1e-5)
    assert 4 <= len(sigmas) - 1 <= 8, f"{len(sigmas) - 1} of 10 steps below K=700"
    parts = _sampler_custom(model, {k: v for k, v in renoised.items() if k == "samples"}, sigmas, 2.0, cond)
    assert stage.shape == parts.shape == (1, 4, 8, 12)
    diff = (stage - parts).abs().max().item()
    assert diff < 1e-4 * max(1.0, parts.abs().max().item()), diff


# --- the plan rounds intermediate sizes to multiples of 8 (not 16) -------------------------------

def test_plan_middle_size_is_8_mod_16(pack):
    """512x768 -> 1280x1280: the share of the log factor after stage 1 is ln4 / ln(1280^2/(512*768));
    each side grows by its own factor and is floored to a multiple of 8: 1240 x 1256 (both 8 mod 16)."""
    from self_cascade.nodes.stage import SelfCascadeStagePlan
    from self_cascade.upsampler.stages import plan_stages

    f = math.log(4) / math.log(1280 * 1280 / (512 * 768))
    w, h = 512 * (1280 / 512) ** f, 768 * (1280 / 768) ** f
    middle = (int(w // 8) * 8, int(h // 8) * 8)
    assert middle == (1240, 1256) and middle[0] % 16 == 8 and middle[1] % 16 == 8
    assert plan_stages((512, 768), (1280, 1280)) == [middle, (1280, 1280)]
    out = SelfCascadeStagePlan.execute(512, 768, 1280, 1280).result
    assert 1240 in out and 1256 in out, out
