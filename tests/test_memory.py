"""The upsampler set as a model ComfyUI manages (nodes/managed.py): a private copy in its own ModelPatcher,
attached to the patched model, loaded by ComfyUI's model management during sampling; the set a loader
returned is never moved, cast or changed."""
from __future__ import annotations

import pytest
import tiny_models
import torch
from tiny_models import run_stage

STAGE = dict(scale=2.0, upscale_method="bicubic", seed=5, steps=6, cfg=2.0, sampler_name="euler",
             scheduler="normal", K=700.0, end_timestep=0.0)


def _trained_like_set(model, seed: int = 3):
    """A set for ``model`` with every tensor random (as a trained set: no exact zeros that survive a cast)."""
    from self_cascade.nodes.patch import model_family
    from self_cascade.upsampler.modules import UpsamplerSet
    from self_cascade.upsampler.taps import derive_taps, emb_dim

    unet = model.model.diffusion_model
    uset = UpsamplerSet.create(derive_taps(unet), emb_dim(unet), model_family(model), "light")
    tiny_models.seed_weights(uset, seed, scale=0.5)
    return uset.eval().requires_grad_(False)


def _snapshot(uset) -> dict:
    return {k: v.detach().clone() for k, v in uset.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and a[k].device == b[k].device
                                        and torch.equal(a[k], b[k]) for k in a)


def _base(seed: int = 0) -> dict:
    return {"samples": torch.randn(1, 4, 4, 6, generator=torch.Generator().manual_seed(seed))}


def test_loader_set_is_bit_identical_after_a_tuned_bf16_run(pack):
    """A bf16 model: the old in-forward ``uset.to(x.dtype)`` turned the cached fp32 set into bf16 (and lost
    precision for the next run); the set must come out exactly as it went in."""
    model = tiny_models.tiny_sd15(seed=0, dtype=torch.bfloat16)
    assert model.model_dtype() == torch.bfloat16
    uset = _trained_like_set(model)
    before = _snapshot(uset)
    cond = tiny_models.conditioning(3)
    short = {**STAGE, "steps": 4}  # bf16 on the CPU is slow
    tuned = run_stage(model, cond, cond, _base(), uset, **short)["samples"]
    plain = run_stage(model, cond, cond, _base(), **short)["samples"]
    assert torch.isfinite(tuned).all() and (tuned.float() - plain.float()).abs().max() > 1e-3
    assert _same(before, _snapshot(uset)), "the loader's set was changed by the run"
    assert all(p.dtype == torch.float32 for p in uset.parameters())


def test_set_is_loaded_by_model_management_during_sampling(pack, tiny_model):
    """In a sampler step (progress hook) the copy is among ComfyUI's loaded models, on the model's load
    device, in its own ModelPatcher; it is not the loader's set, and holds the same weights."""
    import comfy.model_management
    import comfy.utils
    from self_cascade.nodes.managed import managed_copy
    from self_cascade.upsampler.modules import UpsamplerSet

    uset = _trained_like_set(tiny_model)
    seen = []

    def hook(v, t, preview, node_id=None):
        loaded = [lm.model for lm in comfy.model_management.current_loaded_models if lm.model is not None]
        seen.append([p for p in loaded if isinstance(p.model, UpsamplerSet)])

    old = comfy.utils.PROGRESS_BAR_HOOK
    try:
        comfy.utils.set_progress_bar_global_hook(hook)
        cond = tiny_models.conditioning(3)
        run_stage(tiny_model, cond, cond, _base(), uset, **STAGE)
    finally:
        comfy.utils.set_progress_bar_global_hook(old)
    assert seen and all(len(s) == 1 for s in seen), [len(s) for s in seen]
    patcher = seen[0][0]
    copy = patcher.model
    assert copy is not uset and copy is managed_copy(uset, tiny_model).model
    assert patcher.load_device == tiny_model.load_device
    assert all(p.device == torch.device(tiny_model.load_device) for p in copy.parameters())
    assert _same(_snapshot(uset), _snapshot(copy))


def test_attached_to_the_clone_only_and_reused(pack, tiny_model):
    from self_cascade.nodes.common import PACK_KEY
    from self_cascade.nodes.patch import apply_upsamplers

    uset = _trained_like_set(tiny_model)
    pivot = torch.zeros(1, 4, 4, 6)
    a = apply_upsamplers(tiny_model, uset, pivot, 1.0, 100.0)
    b = apply_upsamplers(a, uset, pivot, 0.5, 100.0)  # applying twice replaces
    (pa,) = a.get_additional_models_with_key(PACK_KEY)
    (pb,) = b.get_additional_models_with_key(PACK_KEY)
    assert pa.model is pb.model, "the same set and dtype must reuse one copy"
    assert not tiny_model.get_additional_models_with_key(PACK_KEY), "the input model was changed"
    assert not apply_upsamplers(tiny_model, uset, pivot, 0.0, 100.0).get_additional_models_with_key(PACK_KEY)
    with torch.no_grad():
        next(uset.parameters()).add_(1.0)  # trained further in place: the copy must follow
    (pc,) = apply_upsamplers(tiny_model, uset, pivot, 1.0, 100.0).get_additional_models_with_key(PACK_KEY)
    assert pc.model is not pa.model and _same(_snapshot(uset), _snapshot(pc.model))


def test_inference_mode_set(pack, tiny_model):
    """Sets made by nodes on the server are inference tensors (no version counter): the copy still works."""
    from self_cascade.nodes.managed import managed_copy

    with torch.inference_mode():
        uset = _trained_like_set(tiny_model)
        patcher = managed_copy(uset, tiny_model)
    assert patcher is managed_copy(uset, tiny_model) and _same(_snapshot(uset), _snapshot(patcher.model))


def test_copy_layers_stream_like_comfy_ops(pack, tiny_model):
    """The copy's layers are ComfyUI ops: with weight casting on (what --lowvram turns on for layers it does
    not load) the copy computes exactly what the set computes."""
    from self_cascade.nodes.managed import managed_copy

    uset = _trained_like_set(tiny_model)
    copy = managed_copy(uset, tiny_model).model
    layers = [m for m in copy.modules() if hasattr(m, "comfy_cast_weights")]
    assert len(layers) == sum(1 for m in uset.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear,
                                                                          torch.nn.GroupNorm)))
    g = torch.Generator().manual_seed(0)
    tap = uset.taps[0]
    f, emb = torch.randn(1, tap.channels, 3, 5, generator=g), torch.randn(1, uset.info.emb_dim, generator=g)
    want = uset(0, f, emb)
    try:
        for m in layers:
            m.comfy_cast_weights = True
        got = copy(0, f, emb)
    finally:
        for m in layers:
            del m.comfy_cast_weights  # back to the class default (off)
    assert torch.equal(got, want)


@pytest.mark.parametrize("over, dtype", [({}, torch.float32), ({"dtype": torch.bfloat16}, torch.bfloat16)])
def test_copy_in_the_model_compute_dtype(pack, over, dtype):
    from self_cascade.nodes.managed import compute_dtype, managed_copy

    model = tiny_models.tiny_sd15(seed=0, **over)
    uset = _trained_like_set(model)
    assert compute_dtype(model) == dtype
    assert all(p.dtype == dtype for p in managed_copy(uset, model).model.parameters())
