"""SelfCascadeStage: one whole cascade stage as a node (the work is ``nodes.cascade.cascade_stage``).

Also SelfCascadeStagePlan, the scale decomposition helper (``upsampler.stages.plan_stages``).
"""
from __future__ import annotations

import logging

from comfy_api.latest import io

from ..upsampler.stages import plan_stages
from .cascade import StageSettings, cascade_stage
from .checks import check_k
from .common import (
    CATEGORY,
    DEFAULT_END_TIMESTEP,
    DEFAULT_K,
    K_MAX,
    K_MIN,
    SCALE_MAX,
    SIZE_MAX,
    SelfCascadeError,
)
from .compat import schema
from .stage_inputs import K_MODE_TOOLTIP, k_mode_input, model_inputs, sampling_inputs
from .timesteps import resolve_k

logger = logging.getLogger(__name__)

__all__ = ["NODES", "StageSettings", "cascade_stage"]


class SelfCascadeStage(io.ComfyNode):
    """The next cascade stage in one node: put it after any KSampler (twice for 512 -> 1024 -> 2048)."""

    @classmethod
    def define_schema(cls) -> io.Schema:

        return schema(
            node_id="SelfCascadeStage",
            display_name="Self-Cascade Stage",
            category=CATEGORY,
            search_aliases=["hires fix", "upscale", "high resolution", "self-cascade", "cascade stage"],
            description="Makes a finished image latent larger (x2 per side by default) with the same model, adding "
                        "real detail instead of stretching it: put it after a KSampler (twice for 512 -> 1024 -> "
                        "2048). "
                        "How: the previous result (the pivot) is upsampled, diffused to step K and denoised K -> 0 "
                        "at the new size (the paper's Eq. 6). Connect upsamplers for the tuned version.",
            inputs=[
                *model_inputs("The finished latent of the previous stage (KSampler or Stage output)."),
                io.Float.Input("scale", default=2.0, min=1.0, max=SCALE_MAX, step=0.01,
                               tooltip="Factor per side (2.0 = 4x the pixels, the paper's stage). "
                                       "Use Self-Cascade Stage Plan for other targets."),
                *sampling_inputs(
                    scheduler_tooltip="Scheduler of the whole schedule; the stage runs its part from K to 0.",
                    upsamplers_tooltip="Optional trained time-aware feature upsamplers (tuned version, "
                                       "Self-Cascade Upsampler Loader). Leave empty for the tuning-free stage."),
                io.Int.Input("width", default=0, min=0, max=SIZE_MAX, step=8, optional=True,
                             tooltip="Explicit width of this stage in pixels (multiple of 8); with height set it "
                                     "overrides scale. 0 = use scale. Connect Stage Plan's first_width."),
                io.Int.Input("height", default=0, min=0, max=SIZE_MAX, step=8, optional=True,
                             tooltip="Explicit height of this stage in pixels (multiple of 8); with width set it "
                                     "overrides scale. 0 = use scale. Connect Stage Plan's first_height."),
                k_mode_input(),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="The stage's finished latent at the new size.")],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent, scale, upscale_method, seed, steps, cfg, sampler_name,
                scheduler, K, upsamplers=None, strength=1.0, end_timestep=DEFAULT_END_TIMESTEP, width=0,
                height=0, K_mode="fixed") -> io.NodeOutput:
        import comfy.utils

        k = resolve_k(model, check_k(K), K_mode)
        settings = StageSettings(scale=scale, upscale_method=upscale_method, seed=seed, steps=steps, cfg=cfg,
                                 sampler_name=sampler_name, scheduler=scheduler, K=k, width=width, height=height,
                                 strength=strength, end_timestep=end_timestep)
        return io.NodeOutput(cascade_stage(model, positive, negative, latent, settings, upsamplers,
                                           disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED))


def describe_plan(base: tuple[int, int], target: tuple[int, int]) -> tuple[str, list[tuple[int, int]]]:
    """Human-readable plan ``512x768 -> 1024x1536 (x2.00) -> ...`` and the per-stage sizes."""
    try:
        sizes = plan_stages(base, target)
    except ValueError as e:
        raise SelfCascadeError(f"Stage plan: {e}. Use sizes that are multiples of 8 with the target not smaller "
                               "than the base.") from None
    parts = [f"{base[0]}x{base[1]}"]
    prev = base
    for w, h in sizes:
        parts.append(f"{w}x{h} (x{w / prev[0]:.2f} by x{h / prev[1]:.2f})")
        prev = (w, h)
    return " -> ".join(parts) + f"  [{len(sizes)} stage{'s' if len(sizes) != 1 else ''}]", sizes


class SelfCascadeStagePlan(io.ComfyNode):
    """Scale decomposition: R = ceil(log4(target/base)) stages, each <= 4x pixels."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        size = dict(min=8, max=SIZE_MAX, step=8)
        return schema(
            node_id="SelfCascadeStagePlan",
            display_name="Self-Cascade Stage Plan",
            category=f"{CATEGORY}/utils",
            search_aliases=["hires fix plan", "upscale plan", "resolution plan"],
            description="Tells how many Self-Cascade Stage nodes reach a target size and each one's size, for "
                        "chaining Stages by hand (Self-Cascade Upscale plans by itself). The rule: "
                        "R = ceil(log4(target pixels / base pixels)); every stage but the last is 4x the pixels "
                        "(x2 per side), the last takes the rest (e.g. 512 -> 1024 -> 1536). With a model "
                        "connected it also gives the K that K_mode auto uses on it.",
            inputs=[
                io.Int.Input("base_width", default=512, tooltip="Width of the base generation in pixels (multiple of 8).", **size),
                io.Int.Input("base_height", default=512, tooltip="Height of the base generation in pixels (multiple of 8).", **size),
                io.Int.Input("target_width", default=2048, tooltip="Final width in pixels (multiple of 8).", **size),
                io.Int.Input("target_height", default=2048, tooltip="Final height in pixels (multiple of 8).", **size),
                io.Model.Input("model", optional=True,
                               tooltip="Optional: the model the stages use; the plan then says which K K_mode auto "
                                       "uses on it."),
                io.Float.Input("K", default=DEFAULT_K, min=K_MIN, max=K_MAX, step=1.0, optional=True,
                               tooltip="K in SD1.x's units, converted for the connected model (read only with a "
                                       "model connected). " + K_MODE_TOOLTIP),
            ],
            outputs=[
                io.String.Output(display_name="plan", tooltip="The stages as text: size and per-side factor of each."),
                io.Int.Output(display_name="stages", tooltip="Number of Self-Cascade Stage nodes to chain (R)."),
                io.Int.Output(display_name="first_width", tooltip="Width of the first stage (its scale input is first_width/base_width)."),
                io.Int.Output(display_name="first_height", tooltip="Height of the first stage."),
            ],
        )

    @classmethod
    def execute(cls, base_width, base_height, target_width, target_height, model=None,
                K=DEFAULT_K) -> io.NodeOutput:
        text, sizes = describe_plan((base_width, base_height), (target_width, target_height))
        if model is not None:
            text += f"; K_mode auto: K {K:g} -> {resolve_k(model, check_k(K), 'auto'):g} on this model"
        first = sizes[0] if sizes else (base_width, base_height)
        return io.NodeOutput(text, len(sizes), first[0], first[1])


NODES = (SelfCascadeStage, SelfCascadeStagePlan)
