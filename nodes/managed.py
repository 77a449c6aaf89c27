"""The upsampler set as a model ComfyUI manages: a ModelPatcher built once, when the set is loaded.

The loader, the training node and Untrained Upsamplers return :func:`upsampler_patcher` of their set:
a ``comfy.model_patcher.ModelPatcher`` over the set's modules built with ComfyUI's ``comfy.ops.manual_cast``
layers (``UpsamplerSet(info, operations=...)``, as ``openaimodel.UNetModel`` takes ``operations``).
Its weights are stored in the dtype ComfyUI picks for a UNet of that size on the device
(``model_management.unet_dtype``, as for ControlNets) and cast per layer to the sampled model's compute
dtype. ``apply_upsamplers`` attaches it to the patched model with ``set_additional_models(PACK_KEY, ...)``;
ComfyUI's sampler then loads it with the model (``sampler_helpers.prepare_sampling``), counts its memory,
offloads it when memory is needed and, under ``--lowvram``, streams the weights it could not load.

Nothing is copied: the patcher's parameters are the loaded set's tensors (``load_state_dict(assign=True)``),
converted only where the stored dtype differs. A plain :class:`UpsamplerSet` given to ``apply_upsamplers``
(the Python API: training, benchmarks) gets its own patcher the same way; its tensors are never moved, cast
or changed in place.
"""
from __future__ import annotations

import torch

from ..upsampler.modules import UpsamplerSet

__all__ = ["as_patcher", "storage_dtype", "upsampler_patcher", "upsampler_set"]

#: Dtypes ComfyUI may store the set in, in its order of preference for UNets.
_STORAGE = [torch.float16, torch.bfloat16, torch.float32]


def storage_dtype(uset: UpsamplerSet, device: torch.device) -> torch.dtype:
    """The dtype ComfyUI would store a UNet of the set's size in on ``device`` (float32 on the CPU)."""
    import comfy.model_management

    return comfy.model_management.unet_dtype(device=device, model_params=uset.num_params(),
                                             supported_dtypes=list(_STORAGE))


def upsampler_patcher(uset: UpsamplerSet):
    """A ModelPatcher over ``uset``'s weights in modules of ComfyUI's manual-cast ops, on the offload
    device, loaded to the torch device by ComfyUI's model management. ``uset`` itself is not changed."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.ops

    load = comfy.model_management.get_torch_device()
    offload = comfy.model_management.unet_offload_device()
    dtype = storage_dtype(uset, load)
    with torch.device("meta"):
        managed = UpsamplerSet(uset.info, operations=comfy.ops.manual_cast)
    weights = {k: v.detach().to(device=offload, dtype=dtype if v.is_floating_point() else v.dtype)
               for k, v in uset.state_dict().items()}
    managed.load_state_dict(weights, assign=True)
    managed.eval().requires_grad_(False)
    return comfy.model_patcher.ModelPatcher(managed, load_device=load, offload_device=offload)


def upsampler_set(value) -> UpsamplerSet | None:
    """The UpsamplerSet a SELF_CASCADE_UPSAMPLERS value holds (a set or its ModelPatcher), else None."""
    module = getattr(value, "model", value)
    return module if isinstance(module, UpsamplerSet) else None


def as_patcher(value):
    """``value`` if it is already the set's ModelPatcher, else :func:`upsampler_patcher` of the set."""
    return value if upsampler_set(value) is not value else upsampler_patcher(value)
