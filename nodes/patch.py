"""The tuned ("T") patch: add upsampled pivot features into the UNet's high-res main path (Eq. 7-8).

One DIFFUSION_MODEL wrapper under PACK_KEY (applying twice replaces). At every step it runs the
clean pivot (scaled once with ``process_latent_in``) through the frozen input blocks and middle
block with the current ``emb`` and context, upsamples each tap's feature with the trained
time-aware upsamplers, and adds ``strength *`` that to h after the skip is stored
(``input_block_patch_after_skip``; the middle tap via ``output_block_patch`` at ("output", 0)).
The patch acts while the model's timestep is above ``end_timestep`` (a paper timestep of 1000,
mapped to the model's raw timestep by ``nodes/timesteps.model_timestep``; for SD models the two are
the same number).

Life cycle: :func:`apply_upsamplers` builds an :class:`UpsamplerInjection` and ``install`` returns a
clone of the model carrying it as its one DIFFUSION_MODEL wrapper under PACK_KEY (installing again
replaces it); ``apply_upsamplers`` also attaches a private copy of the set as the clone's additional
model under PACK_KEY, which ComfyUI loads and offloads with it (``nodes/managed.py``). Nothing else is
touched, so removing the clone removes the patch. Training keeps the injection and assigns a new
``pivot`` per batch.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
import torch.nn.functional as F

from ..upsampler.fileformat import IncompatibleUpsamplersError, check_compatible
from ..upsampler.modules import UpsamplerSet
from ..upsampler.taps import Tap, derive_taps, emb_dim, is_unet
from .common import DEFAULT_END_TIMESTEP, PACK_KEY, SelfCascadeError
from .managed import ensure_loaded, managed_copy
from .timesteps import model_sampling_of, model_timestep

logger = logging.getLogger(__name__)

#: Keys of transformer_options that the pivot pass does not inherit: the frozen model's own
#: features are wanted, not those shaped by other packs' block/attention patches.
_PIVOT_DROP = ("patches", "patches_replace", "wrappers", "callbacks")


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


def model_emb(unet, x: torch.Tensor, timesteps: torch.Tensor, y, transformer_options: dict) -> torch.Tensor:
    """The time embedding exactly as UNetModel._forward computes it (emb_patch and label_emb included)."""
    from comfy.ldm.modules.diffusionmodules.util import timestep_embedding

    emb = unet.time_embed(timestep_embedding(timesteps, unet.model_channels, repeat_only=False).to(x.dtype))
    for p in transformer_options.get("patches", {}).get("emb_patch", []):
        emb = p(emb, unet.model_channels, transformer_options)
    if unet.num_classes is not None:
        emb = emb + unet.label_emb(y)
    return emb


def pivot_features(unet, pivot: torch.Tensor, emb: torch.Tensor, context, taps: list[Tap],
                   transformer_options: dict, **kwargs) -> list[torch.Tensor]:
    """The frozen UNet's features of ``pivot`` at ``taps`` (input blocks, then the middle block)."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import forward_timestep_embed

    opts = {k: v for k, v in transformer_options.items() if k not in _PIVOT_DROP}
    opts.update(original_shape=list(pivot.shape), transformer_index=0)
    extra = {k: kwargs.get(k) for k in ("time_context", "num_video_frames", "image_only_indicator")}
    if extra["num_video_frames"] is None:
        extra["num_video_frames"] = unet.default_num_video_frames
    wanted = {t.block for t in taps}
    last_input = max((t.block[1] for t in taps if t.block[0] == "input"), default=-1)
    feats: dict[tuple[str, int], torch.Tensor] = {}
    h = pivot
    for i, module in enumerate(unet.input_blocks):
        if i > last_input and ("middle", 0) not in wanted:
            break
        opts["block"] = ("input", i)
        h = forward_timestep_embed(module, h, emb, context, opts, **extra)
        if ("input", i) in wanted:
            feats[("input", i)] = h
    if ("middle", 0) in wanted:
        opts["block"] = ("middle", 0)
        feats[("middle", 0)] = forward_timestep_embed(unet.middle_block, h, emb, context, opts, **extra)
    return [feats[t.block] for t in taps]


def pair_pivot(p: torch.Tensor, rows: int, n_chunks: int) -> torch.Tensor:
    """The pivot batched like x: ``rows`` = ``n_chunks`` cond/uncond chunks of the sampled batch each.

    A batch-1 pivot serves every row; a pivot of the sampled batch is repeated once per chunk
    (row i of every chunk gets pivot i). Any other batch is an error: checking ``b == rows`` alone
    would pair a batch-2 pivot of a batch-1 sample under CFG as cond -> pivot 0, uncond -> pivot 1.
    """
    b, n_chunks = p.shape[0], max(int(n_chunks), 1)
    if b == 1:
        return p.expand(rows, -1, -1, -1)
    if rows % n_chunks == 0 and b == rows // n_chunks:
        return p if n_chunks == 1 else p.repeat(n_chunks, 1, 1, 1)
    raise SelfCascadeError(f"pivot batch {b} does not fit the sampled batch {rows / n_chunks:g} "
                           f"(x {n_chunks} cond/uncond chunks); use a pivot of batch 1 or of the sampled batch.")


def _fit(a: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``a`` at h's spatial size and dtype (e.g. when Deep Shrink shrank h, or odd sizes)."""
    if a.shape[-2:] != h.shape[-2:]:
        a = F.interpolate(a, size=h.shape[-2:], mode="bilinear", align_corners=False)
    return a.to(h.dtype)


class UpsamplerInjection:
    """Holds (upsampler set, pivot, strength, end_timestep) and is the DIFFUSION_MODEL wrapper.

    ``pivot`` is the clean latent as stored in a LATENT dict; assign a new one at any time (e.g.
    per training batch) and it is scaled once with ``process_latent_in`` on next use. Gradients
    flow into the upsamplers (only the frozen pivot pass runs under no_grad).

    Two ways to hold the set. ``managed`` (set by :func:`apply_upsamplers`): a ModelPatcher over a
    private copy that ComfyUI loads and offloads with the model (``nodes/managed.py``); the copy
    computes in its own dtype. Otherwise (training) the caller owns ``upsamplers`` and the wrapper
    moves it to x's device and ``dtype`` (None: x's dtype) on use.
    """

    def __init__(self, upsamplers: UpsamplerSet, pivot: torch.Tensor, strength: float = 1.0,
                 end_timestep: float = DEFAULT_END_TIMESTEP, dtype: torch.dtype | None = None):
        self.upsamplers = upsamplers
        self.strength = float(strength)
        self.end_timestep = float(end_timestep)
        self.dtype = dtype
        self.managed = None
        self._latent_in = None
        self._end_raw = self.end_timestep  # end_timestep as the model's raw timestep, set by install()
        self.pivot = pivot

    @property
    def pivot(self) -> torch.Tensor:
        return self._pivot

    @pivot.setter
    def pivot(self, value: torch.Tensor) -> None:
        if not torch.is_tensor(value) or value.ndim != 4 or value.shape[0] == 0:
            shape = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
            raise SelfCascadeError(f"'pivot' must be an image latent (B, C, H, W); got {shape}.")
        self._pivot = value
        self._scaled: dict | None = None  # (device, dtype, size) -> scaled, resized pivot

    def install(self, model):
        """A clone of ``model`` with this injection as its (only) Self-Cascade DIFFUSION_MODEL wrapper."""
        import comfy.patcher_extension

        unet = check_unet(model)
        taps, width, family = derive_taps(unet), emb_dim(unet), model_family(model)
        try:
            check_compatible(self.upsamplers, taps, width, family)
        except IncompatibleUpsamplersError as e:
            raise SelfCascadeError(f"'upsamplers' do not fit this model: {e}") from None
        if self._pivot.shape[1] != unet.in_channels:
            raise SelfCascadeError(f"'pivot' has {self._pivot.shape[1]} channels, the model takes "
                                   f"{unet.in_channels}; connect a latent of this model's VAE.")
        self._latent_in = model.model.process_latent_in
        self._end_raw = model_timestep(model_sampling_of(model), self.end_timestep)  # once, not per UNet call
        self._scaled = None
        out = model.clone()
        kind = comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL
        out.remove_wrappers_with_key(kind, PACK_KEY)
        out.add_wrapper_with_key(kind, PACK_KEY, self)
        return out

    def use_managed(self, patcher) -> None:
        """Compute with the managed copy in ``patcher`` (its module and dtype) instead of ``upsamplers``."""
        self.managed = patcher
        self.upsamplers = patcher.model
        self.dtype = next(patcher.model.parameters()).dtype

    def _pivot_for(self, x: torch.Tensor, n_chunks: int) -> torch.Tensor:
        """The scaled pivot at half x's size (ceil), on x's device/dtype, batched like x.

        Kept per (device, dtype, size) so that a step moves and resizes nothing (no host copy per call)."""
        size = ((x.shape[-2] + 1) // 2, (x.shape[-1] + 1) // 2)
        key = (x.device, x.dtype, size)
        if self._scaled is None:
            self._scaled = {}
        p = self._scaled.get(key)
        if p is None:
            p = self._latent_in(self._pivot) if self._latent_in is not None else self._pivot
            p = p.to(device=x.device, dtype=x.dtype)
            if tuple(p.shape[-2:]) != size:
                shrink = p.shape[-2] > size[0] or p.shape[-1] > size[1]
                p = F.interpolate(p, size=size, mode="bilinear", align_corners=False, antialias=shrink)
            self._scaled[key] = p
        return pair_pivot(p, x.shape[0], n_chunks)

    def __call__(self, executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        """Sync-free: no device->host read and no branch on tensor values, so a step can be captured in a
        CUDA graph. Rows are gated on the device (``torch.where``): a row at or below ``end_timestep``
        keeps h bit for bit; the pivot pass then runs for nothing, the price of not reading ``timesteps``."""
        if self.strength == 0.0:  # a setting, not a value on the device
            return executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        # strict: at t == end_timestep the plain model runs (the official code's t > 100)
        on = (timesteps > self._end_raw)[:, None, None, None]
        unet = executor.class_obj
        uset = self.upsamplers
        taps = uset.taps
        dtype = self.dtype or x.dtype
        if self.managed is not None:
            ensure_loaded(self.managed, x.device)  # ComfyUI's sampler has loaded it with the model
        else:
            ref = next(uset.parameters())
            if ref.device != x.device or ref.dtype != dtype:
                uset.to(device=x.device, dtype=dtype)
        n_chunks = len(transformer_options.get("cond_or_uncond", [None])) or 1
        with torch.no_grad():
            emb = model_emb(unet, x, timesteps, y, transformer_options)
            pivot = self._pivot_for(x, n_chunks)
            feats = pivot_features(unet, pivot, emb, context, taps, transformer_options, **kwargs)
        gain = self.strength * on.to(dtype)  # a tensor, as before: all-on rows stay bit-identical
        index = {t.block: i for i, t in enumerate(taps)}

        def add(block, h: torch.Tensor) -> torch.Tensor:
            i = index[block]
            return torch.where(on, h + _fit(gain * uset(i, feats[i].to(dtype), emb.to(dtype)), h), h)

        def after_skip(h: torch.Tensor, opts: dict) -> torch.Tensor:
            block = opts.get("block")
            if block in index and block[0] == "input":
                h = add(block, h)
            return h

        def before_concat(h: torch.Tensor, hsp: torch.Tensor, opts: dict):
            if opts.get("block") == ("output", 0) and ("middle", 0) in index:
                h = add(("middle", 0), h)
            return h, hsp

        opts: dict[str, Any] = dict(transformer_options)
        patches = {k: list(v) for k, v in opts.get("patches", {}).items()}
        patches["input_block_patch_after_skip"] = [after_skip] + patches.get("input_block_patch_after_skip", [])
        patches["output_block_patch"] = [before_concat] + patches.get("output_block_patch", [])
        opts["patches"] = patches
        return executor(x, timesteps, context, y, control, opts, **kwargs)


def apply_upsamplers(model, upsamplers: UpsamplerSet, pivot: torch.Tensor, strength: float = 1.0,
                     end_timestep: float = DEFAULT_END_TIMESTEP):
    """A clone of ``model`` with the tuned Self-Cascade patch (NODES.md contract). Never mutates ``model``
    nor ``upsamplers``: a private copy of the set is attached to the clone as an additional model, so
    ComfyUI's model management loads and offloads it with the model (``nodes/managed.py``)."""
    if not isinstance(upsamplers, UpsamplerSet):
        raise SelfCascadeError(f"'upsamplers' is a {type(upsamplers).__name__}, not a Self-Cascade upsampler "
                               "set; connect SelfCascadeUpsamplerLoader (or the training node).")
    injection = UpsamplerInjection(upsamplers, pivot, strength, end_timestep)
    out = injection.install(model)
    out.remove_additional_models(PACK_KEY)
    if injection.strength != 0.0:  # strength 0: the wrapper never calls the set, so nothing to load
        managed = managed_copy(upsamplers, model)
        injection.use_managed(managed)
        out.set_additional_models(PACK_KEY, [managed])
    return out
