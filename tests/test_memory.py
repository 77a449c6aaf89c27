"""The upsampler set as a model ComfyUI manages (nodes/managed.py): one ModelPatcher built when the set is
loaded, over the set's own tensors in ComfyUI's manual-cast layers, attached to the patched model and loaded
by ComfyUI's model management during sampling; the set is never moved, cast or changed by a run."""
from __future__ import annotations

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


def test_loader_patcher_is_bit_identical_after_a_tuned_bf16_run(pack):
    """The loader's output (the set's ModelPatcher) computes in the bf16 model's dtype by casting per layer;
    its stored weights come out of the run exactly as they went in."""
    from self_cascade.nodes.managed import upsampler_patcher

    model = tiny_models.tiny_sd15(seed=0, dtype=torch.bfloat16)
    managed = upsampler_patcher(_trained_like_set(model))
    before = _snapshot(managed.model)
    cond = tiny_models.conditioning(3)
    tuned = run_stage(model, cond, cond, _base(), managed, **{**STAGE, "steps": 4})["samples"]
    assert torch.isfinite(tuned).all()
    assert _same(before, _snapshot(managed.model)), "the loader's set was changed by the run"


def test_set_is_loaded_by_model_management_during_sampling(pack, tiny_model):
    """In a sampler step (progress hook) the loader's ModelPatcher itself is among ComfyUI's loaded models, on
    the model's load device; its weights are the set's own tensors (no copy where the dtype is kept)."""
    import comfy.model_management
    import comfy.utils
    from self_cascade.nodes.managed import upsampler_patcher
    from self_cascade.upsampler.modules import UpsamplerSet

    uset = _trained_like_set(tiny_model)
    managed = upsampler_patcher(uset)
    seen = []

    def hook(v, t, preview, node_id=None):
        loaded = [lm.model for lm in comfy.model_management.current_loaded_models if lm.model is not None]
        seen.append([p for p in loaded if isinstance(p.model, UpsamplerSet)])

    old = comfy.utils.PROGRESS_BAR_HOOK
    try:
        comfy.utils.set_progress_bar_global_hook(hook)
        cond = tiny_models.conditioning(3)
        run_stage(tiny_model, cond, cond, _base(), managed, **STAGE)
    finally:
        comfy.utils.set_progress_bar_global_hook(old)
    assert seen and all(s == [managed] for s in seen), [len(s) for s in seen]
    assert managed.load_device == tiny_model.load_device
    assert all(p.device == torch.device(tiny_model.load_device) for p in managed.model.parameters())
    assert _same(_snapshot(uset), _snapshot(managed.model))
    ours, theirs = managed.model.state_dict(), uset.state_dict()
    assert all(ours[k].data_ptr() == theirs[k].data_ptr() for k in ours), "a second copy of the weights"


def test_attached_to_the_clone_only_and_reused(pack, tiny_model):
    from self_cascade.nodes.common import PACK_KEY
    from self_cascade.nodes.managed import upsampler_patcher
    from self_cascade.nodes.patch import apply_upsamplers

    managed = upsampler_patcher(_trained_like_set(tiny_model))
    pivot = torch.zeros(1, 4, 4, 6)
    a = apply_upsamplers(tiny_model, managed, pivot, 1.0, 100.0)
    b = apply_upsamplers(a, managed, pivot, 0.5, 100.0)  # applying twice replaces
    assert a.get_additional_models_with_key(PACK_KEY) == [managed] == b.get_additional_models_with_key(PACK_KEY)
    assert not tiny_model.get_additional_models_with_key(PACK_KEY), "the input model was changed"
    assert not apply_upsamplers(tiny_model, managed, pivot, 0.0, 100.0).get_additional_models_with_key(PACK_KEY)


def test_inference_mode_set(pack, tiny_model):
    """Sets made by nodes on the server are inference tensors: the patcher is built over them all the same."""
    from self_cascade.nodes.managed import upsampler_patcher

    with torch.inference_mode():
        uset = _trained_like_set(tiny_model)
        managed = upsampler_patcher(uset)
    assert _same(_snapshot(uset), _snapshot(managed.model))


def test_layers_are_comfy_manual_cast_ops(pack, tiny_model):
    """The patcher's layers are ComfyUI's manual-cast ops (what lets --lowvram stream them): in float32 they
    compute exactly what the plain set computes, and a bf16 input gets bf16 weights cast per layer."""
    import comfy.ops
    from self_cascade.nodes.managed import upsampler_patcher

    uset = _trained_like_set(tiny_model)
    managed = upsampler_patcher(uset).model
    layers = [m for m in managed.modules() if hasattr(m, "comfy_cast_weights")]
    assert len(layers) == sum(1 for m in uset.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear,
                                                                          torch.nn.GroupNorm)))
    ops = comfy.ops.manual_cast
    assert all(isinstance(m, (ops.Conv2d, ops.Linear, ops.GroupNorm)) and m.comfy_cast_weights for m in layers)
    g = torch.Generator().manual_seed(0)
    tap = uset.taps[0]
    f, emb = torch.randn(1, tap.channels, 3, 5, generator=g), torch.randn(1, uset.info.emb_dim, generator=g)
    assert torch.equal(managed(0, f, emb), uset(0, f, emb))
    bf16 = _trained_like_set(tiny_model).to(torch.bfloat16)
    assert torch.equal(managed(0, f.bfloat16(), emb.bfloat16()), bf16(0, f.bfloat16(), emb.bfloat16()))


def test_weights_stored_as_comfy_stores_a_unet_on_the_device(pack):
    """The stored dtype is ComfyUI's pick for a UNet of the set's size on the load device (float32 on the CPU),
    whatever the sampled model's dtype; the compute dtype follows the model (test above)."""
    import comfy.model_management
    from self_cascade.nodes.managed import upsampler_patcher

    model = tiny_models.tiny_sd15(seed=0, dtype=torch.bfloat16)
    uset = _trained_like_set(model)
    want = comfy.model_management.unet_dtype(device=comfy.model_management.get_torch_device(),
                                             model_params=uset.num_params(),
                                             supported_dtypes=[torch.float16, torch.bfloat16, torch.float32])
    assert want == torch.float32  # the CPU
    assert all(p.dtype == want for p in upsampler_patcher(uset).model.parameters())
