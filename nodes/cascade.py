"""The cascade stage as a function: its settings object and ``cascade_stage`` (pivot, Eq. 6 renoise, K -> 0).

Every node, script and benchmark row that runs a stage calls ``cascade_stage(model, positive, negative,
latent, StageSettings(...), upsamplers)``; the node layer (``nodes/stage.py``) only builds the settings
from its inputs.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

from ..upsampler.modules import DEFAULT_END_TIMESTEP
from ..upsampler.renoise import DEFAULT_K, per_sample_noise

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageSettings:
    """The contract of one Self-Cascade stage (paper Sec. 3.2, Eq. 6).

    scale / width / height: the next stage's size, as a per-side factor or as explicit pixels
        (``width`` and ``height`` both > 0 override ``scale``; both 0 = use ``scale``).
    upscale_method: how the pivot ``up(z0)`` is resized (bicubic = official code, bilinear = paper).
    seed, steps, cfg, sampler_name, scheduler: as in KSampler, except that ``steps`` is the length of
        the whole schedule and only its part from K down to 0 runs.
    K: the timestep (of 1000) the pivot is diffused to (Eq. 6); 700 = the paper's default.
    strength, end_timestep: tuned stage only (upsamplers connected): weight of the upsampled pivot
        features, and the timestep at or below which the upsamplers switch off.
    """

    scale: float = 2.0
    upscale_method: str = "bicubic"
    seed: int = 0
    steps: int = 50
    cfg: float = 7.0
    sampler_name: str = "euler"
    scheduler: str = "normal"
    K: float = DEFAULT_K
    width: int = 0
    height: int = 0
    strength: float = 1.0
    end_timestep: float = DEFAULT_END_TIMESTEP

    def replace(self, **changes) -> StageSettings:
        """A copy with ``changes`` applied (e.g. the next seed or size)."""
        return dataclasses.replace(self, **changes)


def shared_bar_callback(model, pbar, offset: int):
    """A sampler callback that moves ``pbar`` (one bar over several stages) to ``offset`` + the step done,
    with the same latent previews as ``latent_preview.prepare_callback``."""
    import latent_preview

    previewer = latent_preview.get_previewer(model.load_device, model.model.latent_format)

    def callback(step, x0, x, total_steps):
        preview = previewer.decode_latent_to_preview_image("JPEG", x0) if previewer else None
        pbar.update_absolute(offset + step + 1, pbar.total, preview)

    return callback


def cascade_stage(model, positive, negative, latent: dict, settings: StageSettings, upsamplers=None, *,
                  disable_pbar: bool = False, progress: tuple[object, int] | None = None) -> dict:
    """The whole stage as the node runs it; returns the new LATENT dict. Mutates neither model nor latent.

    pivot = up(z0_prev); z_K = Eq. 6 at sigma_K (ComfyUI's own ``noise_scaling`` at sigmas[0]);
    then the sampler denoises over the schedule's part from K to 0. With ``upsamplers`` the model is
    a patched clone whose UNet features get the upsampled pivot features added (the tuned stage).
    ``progress`` = (a ``comfy.utils.ProgressBar`` over several stages, the steps done before this stage):
    the sampler reports there instead of on a bar of its own.
    """
    import comfy.sample
    import comfy.samplers
    import latent_preview

    from .checks import batch_index_of, check_conditioning, validate_stage
    from .pivot import PIVOT_KEY, make_pivot
    from .timesteps import cascade_sigmas

    s = settings
    samples, size = validate_stage(model, latent, s, tuned=upsamplers is not None)
    check_conditioning(positive, "positive")
    check_conditioning(negative, "negative")
    pivot = make_pivot(latent, samples, size, s.upscale_method)
    pivot_latent = pivot["samples"]
    sigma_k, sigmas = cascade_sigmas(model, s.K, s.steps, s.scheduler)
    noise = per_sample_noise(pivot_latent.shape, s.seed, batch_index_of(latent, pivot_latent.shape[0]),
                             dtype=pivot_latent.dtype)
    if upsamplers is not None:
        from .patch import apply_upsamplers  # imported late: the stage without upsamplers never needs it

        model = apply_upsamplers(model, upsamplers, samples, s.strength, s.end_timestep)
    logger.info("Self-Cascade stage: %s -> %s, K=%g (sigma %.4f), %d of %d steps executed",
                tuple(samples.shape[-2:]), tuple(pivot_latent.shape[-2:]), s.K, sigma_k, len(sigmas) - 1, s.steps)
    if progress is None:
        callback = latent_preview.prepare_callback(model, len(sigmas) - 1)
    else:
        callback = shared_bar_callback(model, *progress)
    out_samples = comfy.sample.sample_custom(model, noise, s.cfg, comfy.samplers.sampler_object(s.sampler_name),
                                             sigmas, positive, negative, pivot_latent, callback=callback,
                                             disable_pbar=disable_pbar, seed=s.seed)
    out = {key: v for key, v in pivot.items() if key not in ("samples", PIVOT_KEY)}
    out["samples"] = out_samples
    return out
