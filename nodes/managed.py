"""The upsampler set as a model ComfyUI manages (loaded, offloaded and streamed like the UNet).

``apply_upsamplers`` attaches :func:`managed_copy` of the set to the patched ModelPatcher with
``set_additional_models(PACK_KEY, ...)``. ComfyUI's sampler then loads it together with the model
(``comfy.sampler_helpers.prepare_sampling`` -> ``load_models_gpu``), counts its memory, offloads it
when memory is needed and, under ``--lowvram``, streams the weights of the layers it could not load
(the copy's layers are ComfyUI's own ``comfy.ops`` classes, which is what makes that possible).

The copy is private: the set a loader node returned (and ComfyUI cached) is never moved, cast or
otherwise modified. It is cast ONCE, when made, to the model's compute dtype (what the UNet's input
is cast to: the manual-cast dtype, else the weight dtype), and kept per set and dtype, so a second
stage or run reuses the same copy (and, while it stays loaded, the same device memory). A set whose
tensors were changed in place since (training continued) gets a fresh copy.
"""
from __future__ import annotations

import copy
import logging
import weakref

import torch
from torch import nn

from ..upsampler.modules import UpsamplerSet

logger = logging.getLogger(__name__)

__all__ = ["compute_dtype", "ensure_loaded", "managed_copy"]

#: set -> (key, ModelPatcher of its private copy); entries go when the set is garbage collected.
_COPIES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def compute_dtype(model) -> torch.dtype:
    """The dtype the UNet computes in (its input x is cast to it): manual-cast dtype, else the weight dtype."""
    dtype = getattr(model.model, "manual_cast_dtype", None) or model.model_dtype()
    return dtype if dtype in _FLOATS else torch.float32


def _as_comfy_ops(module: nn.Module) -> None:
    """Give the copy's Conv2d/Linear/GroupNorm layers ComfyUI's ``comfy.ops.disable_weight_init`` classes
    (subclasses with the same parameters): ModelPatcher can then stream what it does not load."""
    import comfy.ops

    ops = comfy.ops.disable_weight_init
    kinds = {nn.Conv2d: ops.Conv2d, nn.Linear: ops.Linear, nn.GroupNorm: ops.GroupNorm}
    for m in module.modules():
        cls = kinds.get(type(m))
        if cls is not None:
            m.__class__ = cls


def _versions(uset: UpsamplerSet) -> tuple[int, ...]:
    """In-place modification counters of every tensor of the set (change when it is trained further).
    Inference tensors (a set made under ComfyUI's inference mode, e.g. by a loader node) have none: -1."""
    return tuple(-1 if t.is_inference() else t._version for t in uset.state_dict(keep_vars=True).values())


def managed_copy(uset: UpsamplerSet, model):
    """A ModelPatcher over a private copy of ``uset`` in ``model``'s compute dtype, on its offload device,
    loaded to its load device by ComfyUI's model management. Never modifies ``uset``."""
    import comfy.model_patcher

    dtype = compute_dtype(model)
    key = (dtype, str(model.load_device), str(model.offload_device), _versions(uset))
    hit = _COPIES.get(uset)
    if hit is not None and hit[0] == key:
        return hit[1]
    with torch.no_grad():
        clone = copy.deepcopy(uset).to(device=model.offload_device, dtype=dtype)
    _as_comfy_ops(clone)
    clone.eval().requires_grad_(False)
    patcher = comfy.model_patcher.ModelPatcher(clone, load_device=model.load_device,
                                               offload_device=model.offload_device)
    _COPIES[uset] = (key, patcher)
    logger.debug("Self-Cascade: managed copy of the upsampler set (%s, %d params)", dtype, uset.num_params())
    return patcher


def ensure_loaded(patcher, device: torch.device) -> None:
    """Load the copy if it is neither on ``device`` nor streamed there: the model was called outside
    ComfyUI's sampler (which loads it with the model). A no-op in a normal sampling run."""
    import comfy.model_management

    probe = next((m for m in patcher.model.modules() if hasattr(m, "comfy_cast_weights")), None)
    if probe is None or probe.weight.device == device or probe.comfy_cast_weights:
        return
    logger.debug("Self-Cascade: the upsampler copy was not loaded with the model; loading it now")
    comfy.model_management.load_models_gpu([patcher])
