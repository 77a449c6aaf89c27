"""Input checks of a cascade stage, run once before any work."""
from __future__ import annotations

from ..upsampler.pivot import UPSCALE_METHODS
from .common import SelfCascadeError
from .pivot import pivot_size
from .renoise import check_choice, check_k_input, check_steps, model_latent


def validate_stage(model, latent: dict, s, *, tuned: bool):
    """Every input check of a stage (``s`` is a StageSettings). Returns the model-checked samples."""
    import comfy.samplers

    samples = model_latent(model, latent)
    check_choice(s.upscale_method, list(UPSCALE_METHODS), "upscale_method")
    check_choice(s.sampler_name, comfy.samplers.SAMPLER_NAMES, "sampler_name")
    check_choice(s.scheduler, comfy.samplers.SCHEDULER_NAMES, "scheduler")
    check_k_input(s.K)
    check_steps(s.steps)
    if not (s.width or s.height) and float(s.scale) < 1.0:
        raise SelfCascadeError(f"'scale' = {s.scale} would shrink the image; Self-Cascade goes up in size. "
                               "Use a scale >= 1 (2.0 = the paper's stage, 4x the pixels).")
    if tuned and not float(s.strength) >= 0.0:
        raise SelfCascadeError(f"'strength' = {s.strength} is negative; use 0 (off) to 1 (as trained) or more.")
    if tuned and not float(s.end_timestep) < 1000.0:
        raise SelfCascadeError(f"'end_timestep' = {s.end_timestep} would switch the upsamplers off for every "
                               "step; use a value below 1000 (paper: 100).")
    pivot_size(samples, s.scale, s.width, s.height)  # raises on sizes that are not multiples of 8 or shrink
    return samples
