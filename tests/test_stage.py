"""SelfCascadeStage / cascade_stage: the whole tuning-free stage on tiny real models, in-process and on the server."""
from __future__ import annotations

import logging
import sys
import types

import pytest
import tiny_models
import torch
from tiny_models import run_stage

STAGE = dict(scale=2.0, upscale_method="bicubic", seed=7, steps=8, cfg=2.0, sampler_name="euler",
             scheduler="normal", K=700.0, disable_pbar=True)





@pytest.fixture
def cond():
    return tiny_models.conditioning(3)


def _base(model, cond, batch=1, h=4, w=6, seed=0):
    """A finished base-stage latent (as KSampler makes it): 32x48 px by default (non-square)."""
    import comfy.sample

    empty = torch.zeros(batch, 4, h, w)
    noise = comfy.sample.prepare_noise(empty, seed)
    return {"samples": comfy.sample.sample(model, noise, 6, 2.0, "euler", "normal", cond, cond, empty,
                                           disable_pbar=True, seed=seed)}


@pytest.mark.parametrize("builder", ["tiny_sd15", "tiny_sd21v", "tiny_flow", "tiny_sdxl"])
def test_three_stage_chain_non_square(pack, builder):
    """base 32x48 px -> 64x96 -> 128x192: right shapes, finite values, every family."""

    model = getattr(tiny_models, builder)(seed=0)
    c = tiny_models.conditioning(3, pooled=builder == "tiny_sdxl")
    lat = _base(model, c)
    shapes = []
    for _ in range(2):
        lat = run_stage(model, c, c, lat, **STAGE)
        shapes.append(tuple(lat["samples"].shape))
        assert torch.isfinite(lat["samples"]).all()
    assert shapes == [(1, 4, 8, 12), (1, 4, 16, 24)]
    assert lat["samples"].std() > 0.05, "stage output is flat"


def test_same_seed_identical_different_seed_differs(pack, tiny_model, cond):

    lat = _base(tiny_model, cond)
    a = run_stage(tiny_model, cond, cond, lat, **STAGE)["samples"]
    b = run_stage(tiny_model, cond, cond, lat, **STAGE)["samples"]
    c = run_stage(tiny_model, cond, cond, lat, **{**STAGE, "seed": 8})["samples"]
    assert torch.equal(a, b), "same seed must be bit-identical"
    assert (a - c).abs().max() > 1e-3


def test_batch_of_three_equals_three_single_runs(pack, tiny_model, cond):
    """Entry i of a batch uses seed + i. Equal to batch-1 runs up to float tolerance (batched convs/GEMMs
    pick other kernels/blocking for another batch size, so the sums are ordered differently)."""

    singles_in = [_base(tiny_model, cond, seed=s)["samples"] for s in (1, 2, 3)]
    batch = run_stage(tiny_model, cond, cond, {"samples": torch.cat(singles_in)}, **STAGE)["samples"]
    for i, x in enumerate(singles_in):
        one = run_stage(tiny_model, cond, cond, {"samples": x}, **{**STAGE, "seed": STAGE["seed"] + i})["samples"]
        diff = (batch[i:i + 1] - one).abs().max().item()
        print(f"batch entry {i}: max |batch - single| = {diff:.3g}")
        assert diff < 1e-4, diff
    other = run_stage(tiny_model, cond, cond, {"samples": singles_in[1]}, **STAGE)["samples"]
    assert (batch[1:2] - other).abs().max() > 1e-3, "entry 1 must not reuse entry 0's seed"


def test_batch_index_is_kept_and_seeds_follow_it(pack, tiny_model, cond):

    x = _base(tiny_model, cond, batch=2)["samples"]
    out = run_stage(tiny_model, cond, cond, {"samples": x, "batch_index": [5, 6]}, **STAGE)
    assert out["batch_index"] == [5, 6]
    shifted = run_stage(tiny_model, cond, cond, {"samples": x}, **{**STAGE, "seed": STAGE["seed"] + 5})
    assert (out["samples"] - shifted["samples"]).abs().max() < 1e-4


def test_nothing_mutated(pack, tiny_model, cond):

    lat = _base(tiny_model, cond)
    lat["batch_index"] = [0]
    keys, before = set(lat), lat["samples"].clone()
    opts = repr(tiny_model.model_options)
    state = {k: v.clone() for k, v in tiny_model.model.diffusion_model.state_dict().items()}
    run_stage(tiny_model, cond, cond, lat, **STAGE)
    assert set(lat) == keys and torch.equal(lat["samples"], before)
    assert repr(tiny_model.model_options) == opts
    for k, v in tiny_model.model.diffusion_model.state_dict().items():
        assert torch.equal(v, state[k]), k


BAD = [
    (dict(width=100, height=96), {}, "multiples of 8"),
    (dict(scale=0.5), {}, "'scale'"),
    (dict(K=0.0), {}, "'K'"),
    (dict(K=1000.0), {}, "'K'"),
    (dict(K=-5.0), {}, "'K'"),
    (dict(sampler_name="nope"), {}, "'sampler_name'"),
    (dict(upscale_method="lanczos9"), {}, "'upscale_method'"),
    (dict(steps=0), {}, "'steps'"),
    ({}, dict(channels=16), "channels"),
    ({}, dict(batch=0), "empty batch"),
    ({}, dict(kind="not a latent"), "LATENT"),
]


@pytest.mark.parametrize("over,latent_kind,message", BAD)
def test_bad_input_raises_before_sampling(pack, tiny_model, cond, monkeypatch, over, latent_kind, message):
    import comfy.sample
    from self_cascade.nodes.common import SelfCascadeError

    def no_sampling(*a, **k):
        raise AssertionError("sampling started before the input was validated")

    monkeypatch.setattr(comfy.sample, "sample_custom", no_sampling)
    if latent_kind.get("kind"):
        latent = {"noise": torch.randn(1, 4, 4, 4)}
    else:
        latent = {"samples": torch.randn(latent_kind.get("batch", 1), latent_kind.get("channels", 4), 4, 6)}
    with pytest.raises(SelfCascadeError, match=message):
        run_stage(tiny_model, cond, cond, latent, **{**STAGE, **over})


@pytest.mark.parametrize("over,message", [(dict(strength=-0.5), "'strength'"), (dict(end_timestep=-1.0), "'end_timestep'")])
def test_bad_tuned_input_raises_before_patching(pack, tiny_model, cond, monkeypatch, over, message):
    from self_cascade.nodes.common import SelfCascadeError

    def no_patch(*a, **k):
        raise AssertionError("patched before the input was validated")

    monkeypatch.setitem(sys.modules, "self_cascade.nodes.patch", types.SimpleNamespace(apply_upsamplers=no_patch))
    with pytest.raises(SelfCascadeError, match=message):
        run_stage(tiny_model, cond, cond, {"samples": torch.randn(1, 4, 4, 6)}, **STAGE, upsamplers="UPS", **over)


def test_progress_bar_and_cancel(pack, tiny_model, cond):
    """The stage reports each executed step through ComfyUI's progress hook; an interrupt raised there
    (as the server's hook does, main.py) stops sampling, exactly as for core KSampler."""
    import comfy.model_management
    import comfy.utils

    lat = _base(tiny_model, cond)
    seen = []
    old = comfy.utils.PROGRESS_BAR_HOOK
    try:
        comfy.utils.set_progress_bar_global_hook(lambda v, t, preview, node_id=None: seen.append((v, t)))
        run_stage(tiny_model, cond, cond, lat, **{**STAGE, "steps": 20})
        executed = seen[-1][1]
        assert 12 <= executed <= 16 and [v for v, _ in seen] == list(range(1, executed + 1)), seen

        def cancelling_hook(v, t, preview, node_id=None):
            seen.append(v)
            if v == 2:
                comfy.model_management.interrupt_current_processing(True)
            comfy.model_management.throw_exception_if_processing_interrupted()

        seen.clear()
        comfy.utils.set_progress_bar_global_hook(cancelling_hook)
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            run_stage(tiny_model, cond, cond, lat, **{**STAGE, "steps": 20})
        assert seen == [1, 2], seen
    finally:
        comfy.model_management.interrupt_current_processing(False)
        comfy.utils.set_progress_bar_global_hook(old)


def test_upsamplers_input_calls_the_patch_contract(pack, tiny_model, cond, monkeypatch):
    """With upsamplers connected the stage samples with apply_upsamplers(model, ups, clean pivot, strength,
    end_timestep) (NODES.md). The patch module is replaced by a recorder here: this test checks only the
    stage's side of the contract; the real patch is tested by its own tests."""

    calls = []

    def fake_apply(model, upsamplers, pivot, strength, end_timestep):
        calls.append((model, upsamplers, pivot, strength, end_timestep))
        patched = model.clone()
        patched.model_options["self_cascade_test"] = True
        return patched

    used = []
    import comfy.sample

    real_sample = comfy.sample.sample_custom
    monkeypatch.setattr(comfy.sample, "sample_custom", lambda m, *a, **k: used.append(m) or real_sample(m, *a, **k))
    monkeypatch.setitem(sys.modules, "self_cascade.nodes.patch", types.SimpleNamespace(apply_upsamplers=fake_apply))
    lat = _base(tiny_model, cond)
    run_stage(tiny_model, cond, cond, lat, **STAGE, upsamplers="UPS", strength=0.5, end_timestep=200.0)
    (model, ups, pivot, strength, end), = calls
    assert model is tiny_model and ups == "UPS" and (strength, end) == (0.5, 200.0)
    assert torch.equal(pivot, lat["samples"]), "the patch must get the clean previous-stage latent"
    assert used[0].model_options.get("self_cascade_test"), "the stage must sample with the patched clone"
    assert "self_cascade_test" not in tiny_model.model_options


def test_stage_node_schema_tooltips(pack):
    from self_cascade.nodes.stage import SelfCascadeStage

    schema = SelfCascadeStage.define_schema()
    names = [i.id for i in schema.inputs]
    assert names == ["model", "positive", "negative", "latent", "scale", "upscale_method", "seed", "steps", "cfg",
                     "sampler_name", "scheduler", "K", "upsamplers", "strength", "end_timestep", "width", "height",
                     "K_mode"]
    steps = next(i for i in schema.inputs if i.id == "steps")
    assert "WHOLE schedule" in steps.tooltip and "denoise" in steps.tooltip
    assert all(i.tooltip for i in schema.inputs)


def _chain_prompt(ckpt: str, seed: int) -> dict:
    stage = dict(scale=2.0, upscale_method="bicubic", seed=seed, steps=4, cfg=3.0, sampler_name="euler",
                 scheduler="normal", K=700.0)
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cat", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 48, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "seed": seed, "steps": 3, "cfg": 3.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "SelfCascadeStage", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent": ["5", 0], **stage}},
        "7": {"class_type": "SelfCascadeStage", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent": ["6", 0], **stage}},
        "8": {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": "stage_chain"}},
    }


def test_ksampler_stage_stage_through_server(comfy_server, client, tiny_checkpoint):
    """KSampler -> SelfCascadeStage -> SelfCascadeStage via POST /prompt on the live server (stock loader)."""
    import safetensors.torch

    entry = client.run(_chain_prompt(tiny_checkpoint, seed=3), timeout=300)
    files = entry["outputs"]["8"]["latents"]
    path = comfy_server.base_dir / "output" / files[0]["subfolder"] / files[0]["filename"]
    t = safetensors.torch.load_file(str(path))["latent_tensor"]
    assert tuple(t.shape) == (1, 4, 24, 16)
    assert torch.isfinite(t).all() and t.std() > 0.01


def test_stage_with_real_upsamplers(pack, tiny_model, cond):
    """Integration with the tuned patch (nodes.patch, freshly initialised upsamplers): the stage runs,
    the upsamplers change the result, and the incoming model keeps no patch."""
    from self_cascade.nodes.patch import model_family
    from self_cascade.upsampler.modules import UpsamplerSet
    from self_cascade.upsampler.taps import derive_taps, emb_dim

    unet = tiny_model.model.diffusion_model
    uset = UpsamplerSet.create(derive_taps(unet), emb_dim(unet), model_family(tiny_model), "official", 0)
    lat = _base(tiny_model, cond)
    opts = repr(tiny_model.model_options)
    tuned = run_stage(tiny_model, cond, cond, lat, **STAGE, upsamplers=uset, end_timestep=0.0)["samples"]
    plain = run_stage(tiny_model, cond, cond, lat, **STAGE)["samples"]
    assert tuned.shape == plain.shape == (1, 4, 8, 12) and torch.isfinite(tuned).all()
    assert (tuned - plain).abs().max() > 1e-3, "the upsamplers had no effect"
    assert repr(tiny_model.model_options) == opts


def _stage_node(model, cond, latent, **over):
    """The Stage node's own execute (its K_mode handling included), as ComfyUI calls it with these inputs."""
    from self_cascade.nodes.stage import SelfCascadeStage

    inputs = dict(scale=2.0, upscale_method="bicubic", seed=5, steps=8, cfg=2.0, sampler_name="euler",
                  scheduler="normal", K=700.0)
    inputs.update(over)
    return SelfCascadeStage.execute(model, cond, cond, latent, **inputs).result[0]["samples"]


def test_k_mode_auto_on_the_stage_node(pack, cond, caplog):
    """K_mode auto: on SD1.x's schedule it is the old stage bit for bit; on a flow model (SD3's shift 3) it runs
    exactly the fixed stage at the equal-SNR K (525.7), not at 700, and logs the K it used."""
    from self_cascade.nodes.common import SelfCascadeError
    from self_cascade.nodes.timesteps import equal_snr_k

    base = {"samples": torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(2))}
    sd = tiny_models.tiny_sd15(seed=0)
    assert torch.equal(_stage_node(sd, cond, base, K_mode="auto"), _stage_node(sd, cond, base))
    flow = tiny_models.tiny_flow(seed=0)
    k = equal_snr_k(flow.get_model_object("model_sampling"), 700.0)
    assert k == pytest.approx(525.7, abs=0.05)
    with caplog.at_level(logging.INFO, logger="self_cascade.nodes.timesteps"):
        auto = _stage_node(flow, cond, base, K_mode="auto")
    assert f"-> {k:g} on this model" in caplog.text, caplog.text
    assert torch.equal(auto, _stage_node(flow, cond, base, K=k))
    assert not torch.allclose(auto, _stage_node(flow, cond, base))
    with pytest.raises(SelfCascadeError, match="'K_mode'"):
        _stage_node(flow, cond, base, K_mode="equal")
