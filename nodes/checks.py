"""Every user-facing input check of the pack, one function per value, one message each.

Nodes call these at their edge (``execute`` or the function it delegates to), once, before any
work; the pure core in ``upsampler/`` only keeps cheap ValueErrors for programmer errors.
"""
from __future__ import annotations

import logging

import torch

from ..upsampler.pivot import UPSCALE_METHODS, target_size
from .common import DEFAULT_K, LATENT_CELL, T_STEPS, SelfCascadeError

logger = logging.getLogger(__name__)


def check_latent(latent: dict, name: str = "latent") -> torch.Tensor:
    """Return ``latent['samples']`` after checking it is a non-empty 4-D/5-D tensor."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if samples is None or not hasattr(samples, "ndim"):
        raise SelfCascadeError(f"'{name}' is not a LATENT (no 'samples' tensor). Connect a LATENT output.")
    if samples.ndim not in (4, 5):
        raise SelfCascadeError(f"'{name}' has shape {tuple(samples.shape)}; expected (B, C, H, W) or (B, C, T, H, W).")
    if samples.shape[0] == 0:
        raise SelfCascadeError(f"'{name}' is an empty batch (batch size 0). Feed at least one latent.")
    return samples


def model_latent(model, latent: dict, name: str = "latent") -> torch.Tensor:
    """The LATENT's samples, checked against the model (channels), empty latents fixed as core KSampler does."""
    import comfy.sample

    samples = check_latent(latent, name)
    if getattr(samples, "is_nested", False):
        raise SelfCascadeError(f"'{name}' is a nested (multi-part) latent; Self-Cascade supports plain image/video latents.")
    samples = comfy.sample.fix_empty_latent_channels(model, samples)
    want = model.get_model_object("latent_format").latent_channels
    if samples.shape[1] != want:
        raise SelfCascadeError(
            f"'{name}' has {samples.shape[1]} channels but the model expects {want}. Feed a latent made for this "
            "model (same VAE family), e.g. the output of a KSampler that used this model.")
    return samples


def batch_index_of(latent: dict, batch: int) -> list[int] | None:
    """The LATENT's ``batch_index`` (as set by core batch nodes) if it matches the batch size."""
    index = latent.get("batch_index")
    if index is None:
        return None
    index = [int(i) for i in index]
    if len(index) != batch:
        logger.warning("Self-Cascade: ignoring batch_index of length %d for a batch of %d", len(index), batch)
        return None
    return index


def check_choice(value: str, options, name: str) -> str:
    """``value`` if it is one of ``options``, else a SelfCascadeError naming the input."""
    if value not in options:
        raise SelfCascadeError(f"'{name}' = {value!r} is not available; choose one of {', '.join(map(str, options))}.")
    return value


def check_k(k: float, name: str = "K") -> float:
    """K as float: a timestep strictly inside (0, 1000)."""
    if not (0.0 < float(k) < T_STEPS):
        raise SelfCascadeError(f"'{name}' = {k} is outside (0, {T_STEPS}). K is a timestep out of {T_STEPS} "
                               f"(paper default {DEFAULT_K:g}); choose a value strictly between 0 and {T_STEPS}.")
    return float(k)


def check_steps(steps: int) -> int:
    """The whole schedule's length, at least 1."""
    if int(steps) < 1:
        raise SelfCascadeError(f"'steps' = {steps}: the schedule needs at least 1 step; use e.g. 50.")
    return int(steps)


def check_strength(strength: float) -> float:
    """Weight of the upsampled pivot features: >= 0 (NaN is refused too)."""
    if not float(strength) >= 0.0:
        raise SelfCascadeError(f"'strength' = {strength} is negative; use 0 (off) to 1 (as trained) or more.")
    return float(strength)


def check_end_timestep(end_timestep: float) -> float:
    """The timestep at or below which the upsamplers switch off: 0..1000 on every node (1000: never on)."""
    if not 0.0 <= float(end_timestep) <= T_STEPS:
        raise SelfCascadeError(f"'end_timestep' = {end_timestep} is outside 0..{T_STEPS}: the upsamplers act while "
                               f"the timestep is above it (paper: 100; {T_STEPS} = never).")
    if float(end_timestep) == T_STEPS:
        logger.info("Self-Cascade: end_timestep %d leaves the upsamplers off for every step.", T_STEPS)
    return float(end_timestep)


def pivot_size(samples: torch.Tensor, scale: float, width: int, height: int) -> tuple[int, int]:
    """Latent (h, w) of the next stage from a per-side ``scale`` or explicit pixel ``width``/``height``."""
    h, w = samples.shape[-2], samples.shape[-1]
    if width or height:
        if width % LATENT_CELL or height % LATENT_CELL or not (width and height):
            raise SelfCascadeError(
                f"width/height {width}x{height}: set both, as multiples of {LATENT_CELL} pixels "
                "(or set both to 0 to use 'scale').")
        size = (height // LATENT_CELL, width // LATENT_CELL)
    else:
        if not 1.0 <= float(scale) < float("inf"):
            raise SelfCascadeError(f"'scale' = {scale} is not a size factor >= 1 (Self-Cascade goes up in size). "
                                   "Use a scale >= 1 (2.0 = the paper's stage, 4x the pixels).")
        size = target_size(h, w, scale)
    if size[0] < h or size[1] < w:
        raise SelfCascadeError(f"target {size[1] * LATENT_CELL}x{size[0] * LATENT_CELL} px is smaller than the "
                               f"input {w * LATENT_CELL}x{h * LATENT_CELL} px on one side; choose a larger size.")
    return size


def check_conditioning(value, name: str) -> None:
    """A CONDITIONING: a non-empty list of [tensor, dict] pairs (what CLIPTextEncode makes)."""
    ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(c, (list, tuple)) and len(c) == 2 and torch.is_tensor(c[0]) and isinstance(c[1], dict) for c in value)
    if not ok:
        raise SelfCascadeError(f"'{name}' is a {type(value).__name__}, not a CONDITIONING; connect a text encoder's "
                               "output (e.g. CLIP Text Encode).")


def check_link(value, name: str, method: str, kind: str, source: str) -> None:
    """A linked object that must offer ``method`` (a VAE's encode, a CLIP's tokenize); names the input otherwise."""
    if not callable(getattr(value, method, None)):
        raise SelfCascadeError(f"'{name}' is a {type(value).__name__}, not a {kind}; connect {source}.")


def validate_stage(model, latent: dict, s, *, tuned: bool) -> tuple[torch.Tensor, tuple[int, int]]:
    """Every input check of a stage (``s`` is a StageSettings): the model-checked samples and the pivot size."""
    import comfy.samplers

    samples = model_latent(model, latent)
    check_choice(s.upscale_method, list(UPSCALE_METHODS), "upscale_method")
    check_choice(s.sampler_name, comfy.samplers.SAMPLER_NAMES, "sampler_name")
    check_choice(s.scheduler, comfy.samplers.SCHEDULER_NAMES, "scheduler")
    check_k(s.K)
    check_steps(s.steps)
    if not 0.0 <= float(s.cfg) < float("inf"):  # NaN too
        raise SelfCascadeError(f"'cfg' = {s.cfg} is not a guidance scale; use a number >= 0 (e.g. 7).")
    if tuned:
        check_strength(s.strength)
        check_end_timestep(s.end_timestep)
    return samples, pivot_size(samples, s.scale, s.width, s.height)
