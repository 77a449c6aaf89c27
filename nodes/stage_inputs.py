"""The inputs a cascade stage shares between nodes (Stage and Upscale): one declaration, same ids and tooltips."""
from __future__ import annotations

from comfy_api.latest import io

from ..upsampler.pivot import UPSCALE_METHODS
from .common import (
    DEFAULT_END_TIMESTEP,
    DEFAULT_K,
    END_TIMESTEP_MAX,
    K_MAX,
    K_MIN,
    K_TOOLTIP,
    SEED_MAX,
    SEED_TOOLTIP,
    STEPS_MAX,
    STEPS_TOOLTIP,
    STRENGTH_MAX,
    Upsamplers,
)
from .compat import advanced
from .timesteps import K_MODES

K_MODE_TOOLTIP = ("How K is read. fixed: K is a timestep of the connected model's own schedule (as always). "
                  "auto: K is given in SD1.x's units and converted to the K that re-noises the pivot to the same "
                  "signal-to-noise on the connected model: 700 stays 700 on SD1.x/SD2.x/SDXL and becomes about 526 "
                  "on SD3/SD3.5, 513 on FLUX.1 dev, 294 on Wan 2.1. The K used is logged.")


def model_inputs(latent_tooltip: str) -> list:
    """model, positive, negative and the finished latent the stage(s) start from."""
    return [
        io.Model.Input("model", tooltip="The same model as the base stage (any family: eps, v, flow)."),
        io.Conditioning.Input("positive", tooltip="Positive conditioning (as for the base stage)."),
        io.Conditioning.Input("negative", tooltip="Negative conditioning (as for the base stage)."),
        io.Latent.Input("latent", tooltip=latent_tooltip),
    ]


def sampling_inputs(*, seed_tooltip: str = SEED_TOOLTIP, steps_tooltip: str = STEPS_TOOLTIP,
                    scheduler_tooltip: str, upsamplers_tooltip: str) -> list:
    """upscale_method, the KSampler-like inputs, K, and the tuned version's optional inputs, in this order."""
    import comfy.samplers

    return [
        io.Combo.Input("upscale_method", options=list(UPSCALE_METHODS), default="bicubic",
                       tooltip="Pivot upsampling: bicubic (official code), bilinear (paper), nearest-exact, area.",
                       **advanced(io.Combo.Input)),
        io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=True, tooltip=seed_tooltip),
        io.Int.Input("steps", default=50, min=1, max=STEPS_MAX, tooltip=steps_tooltip),
        io.Float.Input("cfg", default=7.0, min=0.0, max=100.0, step=0.1, round=0.01,
                       tooltip="Classifier-free guidance scale (as in KSampler)."),
        io.Combo.Input("sampler_name", options=list(comfy.samplers.SAMPLER_NAMES), default="euler",
                       tooltip="Sampler for the steps from K to 0 (as in KSampler)."),
        io.Combo.Input("scheduler", options=list(comfy.samplers.SCHEDULER_NAMES), default="normal",
                       tooltip=scheduler_tooltip),
        io.Float.Input("K", default=DEFAULT_K, min=K_MIN, max=K_MAX, step=1.0, tooltip=K_TOOLTIP),
        Upsamplers.Input("upsamplers", optional=True, tooltip=upsamplers_tooltip),
        io.Float.Input("strength", default=1.0, min=0.0, max=STRENGTH_MAX, step=0.01, optional=True,
                       tooltip="Tuned version only: weight of the upsampled pivot features (1 = as trained)."),
        io.Float.Input("end_timestep", default=DEFAULT_END_TIMESTEP, min=0.0, max=END_TIMESTEP_MAX, step=1.0,
                       optional=True, tooltip="Tuned version only: upsamplers act while the timestep is above this "
                                              "(paper: 100); the last steps run the plain model.",
                       **advanced(io.Float.Input)),
    ]


def k_mode_input() -> io.Combo.Input:
    """The optional K_mode combo (fixed = K on the model's own schedule, as before; auto = SD1.x units)."""
    return io.Combo.Input("K_mode", options=list(K_MODES), default="fixed", optional=True, tooltip=K_MODE_TOOLTIP)


def k_later_input() -> io.Float.Input:
    """Upscale's optional K of the stages after the first (0 = the same K for every stage)."""
    return io.Float.Input("K_later", default=0.0, min=0.0, max=K_MAX, step=1.0, optional=True,
                          tooltip="K of every stage after the first; 0 = the same K for every stage. Later stages "
                                  "start from a larger, already refined pivot: a lower K there keeps more of it and "
                                  "runs fewer steps, a higher K lets the model redraw more. Read like K (K_mode).",
                          **advanced(io.Float.Input))
