"""The tuned ("T") patch on a ModelPatcher: add upsampled pivot features into the UNet's high-res path (Eq. 7-8).

:func:`apply_upsamplers` returns a clone of the model carrying, under PACK_KEY, one immutable
:class:`~.wrapper.UpsamplerWrapper` built by :func:`make_wrapper` as its DIFFUSION_MODEL, OUTER_SAMPLE and
CALC_COND_BATCH wrapper (``nodes/wrapper.py`` says what each does), and the upsampler set's ModelPatcher
(``nodes/managed.py``) as an additional model, which ComfyUI loads and offloads with it. Applying again
replaces all of them; nothing else is touched, so removing the clone removes the patch. The patch acts while
the model's timestep is above ``end_timestep`` (a paper timestep of 1000, mapped to the raw timestep of the
model being sampled when sampling starts; for SD models the two are the same number).

Training owns a set it trains: :class:`TrainingPatch` installs it with a pivot slot assigned per batch.
"""
from __future__ import annotations

import dataclasses

import torch

from ..upsampler.fileformat import IncompatibleUpsamplersError, check_compatible
from ..upsampler.modules import UpsamplerSet
from ..upsampler.taps import derive_taps, emb_dim, is_unet
from .common import DEFAULT_END_TIMESTEP, PACK_KEY, SelfCascadeError
from .managed import as_patcher, upsampler_set
from .timesteps import model_sampling_of, model_timestep
from .wrapper import UpsamplerWrapper

__all__ = ["TrainingPatch", "UpsamplerInjection", "apply_upsamplers", "check_unet", "install", "make_wrapper",
           "model_family"]


def model_family(model) -> str:
    """ComfyUI's model config class name (e.g. 'SD15', 'SD20', 'SDXL')."""
    return type(model.model.model_config).__name__


def check_unet(model) -> torch.nn.Module:
    """The model's UNet, or a clear error for DiT/Flux-style models."""
    unet = model.get_model_object("diffusion_model")
    if not is_unet(unet):
        raise SelfCascadeError(
            f"'model' is a {type(unet).__name__} ({model_family(model)}), not an SD-style UNet: the tuned "
            "upsamplers need UNet input/middle blocks. The tuning-free Self-Cascade path (SelfCascadeStage "
            "without upsamplers) works for this model.")
    return unet


def check_pivot(pivot) -> torch.Tensor:
    """``pivot`` if it is an image latent tensor (B, C, H, W) with B >= 1."""
    if not torch.is_tensor(pivot) or pivot.ndim != 4 or pivot.shape[0] == 0:
        shape = tuple(pivot.shape) if torch.is_tensor(pivot) else type(pivot).__name__
        raise SelfCascadeError(f"'pivot' must be an image latent (B, C, H, W); got {shape}.")
    return pivot


def make_wrapper(model, upsamplers: UpsamplerSet, pivot: torch.Tensor, strength: float = 1.0,
                 end_timestep: float = DEFAULT_END_TIMESTEP, *, dtype: torch.dtype | None = None,
                 slot=None) -> UpsamplerWrapper:
    """The wrapper for ``model``, after checking that the set and the pivot fit it."""
    unet = check_unet(model)
    try:
        check_compatible(upsamplers, derive_taps(unet), emb_dim(unet), model_family(model))
    except IncompatibleUpsamplersError as e:
        raise SelfCascadeError(f"'upsamplers' do not fit this model: {e}") from None
    check_pivot(pivot)
    if pivot.shape[1] != unet.in_channels:
        raise SelfCascadeError(f"'pivot' has {pivot.shape[1]} channels, the model takes "
                               f"{unet.in_channels}; connect a latent of this model's VAE.")
    return UpsamplerWrapper(upsamplers=upsamplers, pivot=pivot, strength=float(strength),
                            end_timestep=float(end_timestep),
                            end_raw=model_timestep(model_sampling_of(model), float(end_timestep)),
                            latent_in=model.model.process_latent_in, dtype=dtype, slot=slot)


def install(model, wrapper: UpsamplerWrapper, set_patcher=None):
    """A clone of ``model`` with ``wrapper`` as its only Self-Cascade wrapper of each kind, and ``set_patcher``
    (the set's ModelPatcher, or None) as its only Self-Cascade additional model."""
    import comfy.patcher_extension

    kinds = comfy.patcher_extension.WrappersMP
    out = model.clone()
    for kind, fn in ((kinds.DIFFUSION_MODEL, wrapper), (kinds.OUTER_SAMPLE, wrapper.outer_sample),
                     (kinds.CALC_COND_BATCH, wrapper.add_grid)):
        out.remove_wrappers_with_key(kind, PACK_KEY)
        out.add_wrapper_with_key(kind, PACK_KEY, fn)
    out.remove_additional_models(PACK_KEY)
    if set_patcher is not None:
        out.set_additional_models(PACK_KEY, [set_patcher])
    return out


def apply_upsamplers(model, upsamplers, pivot: torch.Tensor, strength: float = 1.0,
                     end_timestep: float = DEFAULT_END_TIMESTEP):
    """A clone of ``model`` with the tuned Self-Cascade patch (NODES.md contract). Never mutates ``model``
    nor ``upsamplers`` (the set's ModelPatcher from a loader node, or an UpsamplerSet, which gets one)."""
    uset = upsampler_set(upsamplers)
    if uset is None:
        raise SelfCascadeError(f"'upsamplers' is a {type(upsamplers).__name__}, not a Self-Cascade upsampler "
                               "set; connect SelfCascadeUpsamplerLoader (or the training node).")
    wrapper = make_wrapper(model, uset, pivot, strength, end_timestep)
    if wrapper.strength == 0.0:  # the wrapper never calls the set, so nothing to load
        return install(model, wrapper)
    patcher = as_patcher(upsamplers)
    return install(model, dataclasses.replace(wrapper, upsamplers=patcher.model), patcher)


class TrainingPatch:
    """A set its owner trains (float32, moved to x's device by the wrapper; gradients flow into it, only the
    frozen pivot pass runs under no_grad) and a pivot slot: assign ``pivot`` at any time (per training batch)."""

    def __init__(self, upsamplers: UpsamplerSet, pivot: torch.Tensor, strength: float = 1.0,
                 end_timestep: float = DEFAULT_END_TIMESTEP, dtype: torch.dtype | None = torch.float32):
        self.upsamplers = upsamplers
        self.strength, self.end_timestep = float(strength), float(end_timestep)
        self.dtype = dtype or torch.float32
        self.pivot = pivot

    @property
    def pivot(self) -> torch.Tensor:
        return self._pivot

    @pivot.setter
    def pivot(self, value: torch.Tensor) -> None:
        self._pivot = check_pivot(value)

    def install(self, model):
        """A clone of ``model`` whose wrapper computes with this set and reads this slot's pivot."""
        wrapper = make_wrapper(model, self.upsamplers, self._pivot, self.strength, self.end_timestep,
                               dtype=self.dtype, slot=self)
        return install(model, wrapper)


#: The earlier name of :class:`TrainingPatch`, kept for Python callers of the documented API (docs/NODES.md).
UpsamplerInjection = TrainingPatch
