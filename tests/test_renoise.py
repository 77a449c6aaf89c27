"""Eq. 6 (pivot replacement) on ComfyUI's real model_sampling classes: eps, v-prediction, flow (CONST)."""
from __future__ import annotations

import math

import pytest
import tiny_models
import torch

FAMILIES = {"eps": tiny_models.tiny_sd15, "v": tiny_models.tiny_sd21v, "flow": tiny_models.tiny_flow}


@pytest.fixture(params=list(FAMILIES))
def family(request, pack):
    return request.param, FAMILIES[request.param](seed=0)


def _independent_abar() -> torch.Tensor:
    """SD's 'linear' schedule computed here from its definition (betas linear in sqrt), float64."""
    betas = torch.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0)


@pytest.mark.parametrize("k", [700.0, 300.0, 1.0, 999.0])
@pytest.mark.parametrize("name", ["eps", "v"])
def test_sigma_at_k_discrete_is_timestep_k(pack, name, k):
    from self_cascade.nodes.timesteps import schedule_sigma as sigma_at_k

    ms = FAMILIES[name](seed=0).get_model_object("model_sampling")
    sigma = sigma_at_k(ms, k)
    t = k / 1000 * 999  # ComfyUI's discrete timestep for percent K/1000
    abar = 1.0 / (1.0 + sigma ** 2)
    ref = _independent_abar()
    lo, hi = ref[math.ceil(t)].item(), ref[math.floor(t)].item()
    assert lo - 1e-6 <= abar <= hi + 1e-6, (k, abar, lo, hi)
    assert int(ms.timestep(torch.tensor(sigma))) == round(t)


@pytest.mark.parametrize("k", [700.0, 250.0])
def test_sigma_at_k_flow_classes(pack, k):
    import comfy.model_sampling as cms
    from self_cascade.nodes.timesteps import schedule_sigma as sigma_at_k

    flow = FAMILIES["flow"](seed=0).get_model_object("model_sampling")  # shift 3, SD3-style
    u = k / 1000
    assert sigma_at_k(flow, k) == pytest.approx(3 * u / (1 + 2 * u), rel=1e-6)
    plain = cms.ModelSamplingDiscreteFlow()  # shift 1: sigma_K = K/1000, timestep = K
    assert sigma_at_k(plain, k) == pytest.approx(u, rel=1e-6)
    assert float(plain.timestep(torch.tensor(sigma_at_k(plain, k)))) == pytest.approx(k, rel=1e-5)
    flux = cms.ModelSamplingFlux()  # shift 1.15 (Flux)
    assert sigma_at_k(flux, k) == pytest.approx(math.exp(1.15) / (math.exp(1.15) + (1 / u - 1)), rel=1e-6)


def test_eq6_mean_variance_and_exact_form(family):
    """The renoised latent follows Eq. 6: N(sqrt(abar) x0, (1-abar) I) for eps/v; N((1-s) x0, s^2 I) for flow."""
    from self_cascade.nodes.timesteps import schedule_sigma as sigma_at_k
    from self_cascade.upsampler.renoise import per_sample_noise, renoise

    name, model = family
    ms = model.get_model_object("model_sampling")
    sigma = sigma_at_k(ms, 700)
    x0 = torch.linspace(-2, 2, 4).view(1, 4, 1, 1).expand(2, 4, 128, 128).clone()
    noise = per_sample_noise(x0.shape, seed=5)
    before = x0.clone()
    z = renoise(ms, x0, noise, sigma)
    assert torch.equal(x0, before), "renoise mutated its input"
    if name == "flow":
        mean, std = (1 - sigma) * x0, sigma
        x = z
    else:
        abar = 1.0 / (1.0 + sigma ** 2)
        x = ms.calculate_input(torch.tensor(sigma), z)  # what the UNet sees: the DDPM-space latent
        mean, std = abar ** 0.5 * x0, (1 - abar) ** 0.5
    torch.testing.assert_close(x, mean + std * noise, rtol=1e-5, atol=1e-5)
    resid = (x - mean).transpose(0, 1).reshape(4, -1)  # per channel: 32768 samples each
    assert resid.mean(dim=1).abs().max() < 4 * std / resid.shape[1] ** 0.5 + 1e-6
    assert torch.allclose(resid.var(dim=1), torch.full((4,), std ** 2), rtol=0.05)


def test_remaining_schedule_50_steps_at_700_runs_about_35(pack, tiny_model):
    import comfy.samplers
    from self_cascade.nodes.renoise import cascade_sigmas

    sigma_k, sigmas = cascade_sigmas(tiny_model, 700, 50, "normal")
    full = comfy.samplers.calculate_sigmas(tiny_model.get_model_object("model_sampling"), "normal", 50)
    assert sigmas[0].item() == pytest.approx(sigma_k)
    assert sigmas[-1].item() == 0.0
    assert torch.all(sigmas[1:] < sigmas[:-1]), "schedule must strictly decrease"
    assert torch.equal(sigmas[1:], full[full < sigma_k].float())
    assert 34 <= len(sigmas) - 1 <= 36, len(sigmas) - 1
    assert (sigmas[0] - sigmas[1]) / sigmas[0] > 1e-5, "near-duplicate first step"


def test_remaining_drops_near_duplicate(pack):
    from self_cascade.upsampler.renoise import remaining_sigmas

    full = torch.tensor([10.0, 5.0, 2.0, 1.0, 0.0])
    assert remaining_sigmas(full, 5.0 * (1 + 1e-7)).tolist() == pytest.approx([5.0, 2.0, 1.0, 0.0])
    assert remaining_sigmas(full, 3.0).tolist() == [3.0, 2.0, 1.0, 0.0]
    assert remaining_sigmas(full, 0.5).tolist() == [0.5, 0.0]


@pytest.mark.parametrize("k", [0, 1000, -3, 1000.5, float("nan")])
def test_k_outside_open_interval_is_rejected(pack, tiny_model, k):
    from self_cascade.nodes.common import SelfCascadeError
    from self_cascade.nodes.renoise import renoise_latent

    with pytest.raises(SelfCascadeError, match="'K'"):
        renoise_latent(tiny_model, {"samples": torch.randn(1, 4, 8, 8)}, k, 0, 50, "normal")


def test_noise_seed_semantics(pack):
    from self_cascade.upsampler.renoise import per_sample_noise

    a = per_sample_noise((3, 4, 5, 6), seed=42)
    assert torch.equal(a, per_sample_noise((3, 4, 5, 6), seed=42)), "same seed must be bit-identical"
    assert not torch.equal(a, per_sample_noise((3, 4, 5, 6), seed=43))
    for i in range(3):  # batch entry i == a batch-1 run with seed + i, bit for bit
        assert torch.equal(a[i:i + 1], per_sample_noise((1, 4, 5, 6), seed=42 + i))
    b = per_sample_noise((2, 4, 5, 6), seed=42, batch_index=[2, 0])
    assert torch.equal(b[0], a[2]) and torch.equal(b[1], a[0])
    assert per_sample_noise((1, 2, 3), seed=2 ** 64 - 1, batch_index=[1]).shape == (1, 2, 3)  # wraps, no overflow


def _custom_sample(model, latent, sigmas, cfg, cond):
    """The real SamplerCustom node code path (comfy_extras.nodes_custom_sampler), add_noise disabled."""
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import SamplerCustom

    out = SamplerCustom.execute(model, False, 0, cfg, cond, cond, comfy.samplers.sampler_object("euler"), sigmas, latent)
    return out.result[0]["samples"]


@pytest.mark.parametrize("name", ["eps", "v", "flow"])
def test_handoff_to_sampler_custom_continues_exactly(pack, name):
    """Renoise -> SamplerCustom(add_noise=False, SIGMAS) == one direct sample_custom from K with the same noise."""
    import comfy.sample
    import comfy.samplers
    from self_cascade.nodes.renoise import renoise_latent
    from self_cascade.upsampler.renoise import per_sample_noise

    model = FAMILIES[name](seed=0)
    cond = tiny_models.conditioning(3)
    pivot = torch.randn(2, 4, 8, 12, generator=torch.Generator().manual_seed(1))
    latent = {"samples": pivot, "batch_index": [0, 1]}
    out, sigmas = renoise_latent(model, latent, 700, 11, 12, "normal")
    assert torch.equal(latent["samples"], pivot) and set(latent) == {"samples", "batch_index"}, "input mutated"
    via_nodes = _custom_sample(model, out, sigmas, 2.0, cond)
    noise = per_sample_noise(pivot.shape, 11)
    direct = comfy.sample.sample_custom(model, noise, 2.0, comfy.samplers.sampler_object("euler"), sigmas,
                                        cond, cond, pivot, seed=11)
    diff = (via_nodes - direct).abs().max().item()
    assert diff < 1e-4 * max(1.0, direct.abs().max().item()), diff
    # and the hand-off really matters: feeding the un-renoised pivot gives something else
    assert (_custom_sample(model, {"samples": pivot}, sigmas, 2.0, cond) - direct).abs().max() > 1e-2


def test_renoise_node_rejects_bad_latents(pack, tiny_model):
    from self_cascade.nodes.common import SelfCascadeError
    from self_cascade.nodes.renoise import renoise_latent

    with pytest.raises(SelfCascadeError, match="channels"):
        renoise_latent(tiny_model, {"samples": torch.randn(1, 16, 8, 8)}, 700, 0, 50, "normal")
    with pytest.raises(SelfCascadeError, match="empty batch"):
        renoise_latent(tiny_model, {"samples": torch.randn(0, 4, 8, 8)}, 700, 0, 50, "normal")
    with pytest.raises(SelfCascadeError, match="'steps'"):
        renoise_latent(tiny_model, {"samples": torch.randn(1, 4, 8, 8)}, 700, 0, 0, "normal")
    with pytest.raises(SelfCascadeError, match="'scheduler'"):
        renoise_latent(tiny_model, {"samples": torch.randn(1, 4, 8, 8)}, 700, 0, 50, "nope")


def test_handoff_to_sampler_custom_advanced_flow(pack):
    """The same hand-off through SamplerCustomAdvanced (DisableNoise + CFGGuider nodes) on a flow model."""
    import comfy.sample
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import CFGGuider, DisableNoise, SamplerCustomAdvanced
    from self_cascade.nodes.renoise import renoise_latent
    from self_cascade.upsampler.renoise import per_sample_noise

    model = FAMILIES["flow"](seed=1)
    cond = tiny_models.conditioning(4)
    pivot = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    out, sigmas = renoise_latent(model, {"samples": pivot}, 600, 5, 10, "simple")
    guider = CFGGuider.execute(model, cond, cond, 3.0).result[0]
    sampler = comfy.samplers.sampler_object("euler")
    via_nodes = SamplerCustomAdvanced.execute(DisableNoise.execute().result[0], guider, sampler, sigmas,
                                              out).result[0]["samples"]
    direct = comfy.sample.sample_custom(model, per_sample_noise(pivot.shape, 5), 3.0, sampler, sigmas,
                                        cond, cond, pivot, seed=5)
    assert (via_nodes - direct).abs().max().item() < 1e-4 * max(1.0, direct.abs().max().item())


@pytest.mark.parametrize("name", ["eps", "v", "flow"])
def test_one_time_mapping_k_gate_and_training_agree(pack, name):
    """nodes/timesteps.py is the one mapping. Discrete models: the gate's raw timestep is the DDPM index
    (end 100 -> 100) and training's sigma is ms.sigma(t); K's schedule point t/1000 is index t*999/1000.
    Flow models: all three agree exactly (raw = t * multiplier / 1000)."""
    import comfy.model_sampling as cms
    from self_cascade.nodes.timesteps import model_timestep, schedule_sigma, timestep_sigma

    ms = FAMILIES[name](seed=0).get_model_object("model_sampling")
    ts = torch.tensor([101.0, 350.0, 700.0])
    if name == "flow":
        assert [model_timestep(ms, t) for t in (100.0, 700.0)] == [100.0, 700.0]
        for t in ts.tolist():
            assert float(timestep_sigma(ms, t)) == pytest.approx(schedule_sigma(ms, t), rel=1e-6)
        flux = cms.ModelSamplingFlux()  # raw timestep = sigma (no multiplier): the schedule point t/1000
        assert model_timestep(flux, 700.0) == pytest.approx(schedule_sigma(flux, 700.0), rel=1e-6)
    else:
        assert model_timestep(ms, 100.0) == 100.0 and model_timestep(ms, 999.0) == 999.0
        assert torch.equal(timestep_sigma(ms, ts), ms.sigma(ts).float())  # training's ms.sigma(t), unchanged
        assert torch.equal(timestep_sigma(ms, torch.arange(101, 104)), ms.sigma(torch.arange(101, 104)).float())
        for t in ts.tolist():
            assert schedule_sigma(ms, t) == pytest.approx(float(ms.sigma(torch.tensor(t * 999 / 1000))), rel=1e-6)
            assert schedule_sigma(ms, t) < float(timestep_sigma(ms, t))


#: K_mode auto on each family the tests build (and FLUX.1 from ComfyUI's own class: no tiny Flux model here),
#: with the equal-SNR K that docs/TUNING_FREE.md lists (best integer K) for K = 700 in SD1.x units.
AUTO_K_700 = {"tiny_sd15": 700, "tiny_sd21v": 700, "tiny_sdxl": 700, "tiny_flow": 526, "tiny_wan21": 294,
              "flux_dev_class": 513, "flux_schnell_class": 550}


def _auto_family(name: str):
    import comfy.model_sampling as cms
    import comfy.supported_models as sm

    if not name.endswith("_class"):
        return getattr(tiny_models, name)(seed=0).get_model_object("model_sampling")

    class Flux(cms.ModelSamplingFlux, cms.CONST):
        pass

    return Flux(sm.FluxSchnell({}) if "schnell" in name else sm.Flux({}))


def _independent_snr(ms, k: float) -> float:
    """SNR at K from the family's own formula: eps/v x0 + sigma eps -> 1/sigma^2; flow (1-s) x0 + s eps."""
    import comfy.model_sampling as cms
    from self_cascade.nodes.timesteps import schedule_sigma

    s = schedule_sigma(ms, k)
    return ((1 - s) / s) ** 2 if isinstance(ms, cms.CONST) else 1 / s ** 2


@pytest.mark.parametrize("name", list(AUTO_K_700))
def test_auto_k_has_sds_pivot_snr_on_each_family(pack, name):
    """The converted K re-noises the pivot to SD's SNR at t=700 (0.090, from SD's own betas here) on the model's
    own schedule; its integer is the documented value; a lower K in SD units stays lower after conversion."""
    from self_cascade.nodes.timesteps import equal_snr_k

    ms = _auto_family(name)
    k = equal_snr_k(ms, 700.0)
    abar = _independent_abar()
    sd_snr = float(abar[699] / (1 - abar[699]))  # 0.090: SD at K = 700 (ComfyUI's index 699.3, within 0.3%)
    assert abs(sd_snr - 0.090) < 0.001
    assert _independent_snr(ms, k) == pytest.approx(sd_snr, rel=0.005), (name, k)
    assert round(k) == AUTO_K_700[name], (name, k)
    assert equal_snr_k(ms, 600.0) < k


def test_renoise_node_k_mode(pack):
    """Renoise with K_mode auto equals Renoise at the converted K (flow, shift 3), and fixed keeps K as given."""
    from self_cascade.nodes.renoise import SelfCascadeRenoise
    from self_cascade.nodes.timesteps import equal_snr_k

    flow = tiny_models.tiny_flow(seed=0)
    latent = {"samples": torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))}
    k = equal_snr_k(flow.get_model_object("model_sampling"), 700.0)
    auto = SelfCascadeRenoise.execute(flow, latent, 700.0, 3, 20, "normal", K_mode="auto").result
    at_k = SelfCascadeRenoise.execute(flow, latent, k, 3, 20, "normal").result
    fixed = SelfCascadeRenoise.execute(flow, latent, 700.0, 3, 20, "normal", K_mode="fixed").result
    assert torch.equal(auto[0]["samples"], at_k[0]["samples"]) and torch.equal(auto[1], at_k[1])
    assert auto[1][0] < fixed[1][0], "auto must start lower in sigma than K=700 on a flow model"
