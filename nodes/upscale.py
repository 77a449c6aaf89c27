"""SelfCascadeUpscale: one node from a base LATENT to any target size, every cascade stage inside.

The stages are planned by ``upsampler.stages.plan_stages`` (the paper's rule, Sec. 3.1:
R = ceil(log4(target pixels / base pixels)) stages, each at most 4x the pixels of the one before)
and each runs through ``nodes.cascade.cascade_stage`` with explicit ``width``/``height``. Stage i
(0-based) uses ``seed + i``, so the node equals a chain of Self-Cascade Stage nodes with seeds
seed, seed+1, ... and the plan's sizes.
"""
from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from .cascade import StageSettings, cascade_stage
from .checks import validate_stage
from .common import (
    CATEGORY,
    DEFAULT_END_TIMESTEP,
    LATENT_CELL,
    SEED_MAX,
    SEED_TOOLTIP,
    STEPS_TOOLTIP,
    SelfCascadeError,
)
from .stage import describe_plan
from .stage_inputs import model_inputs, sampling_inputs

logger = logging.getLogger(__name__)

__all__ = ["NODES", "SelfCascadeUpscale", "plan_for", "upscale"]

#: Largest target side in pixels (the widget range; saved workflows depend on it: only ever widen).
SIZE_MAX = 16384


def plan_for(samples: torch.Tensor, target: tuple[int, int]) -> tuple[str, list[tuple[int, int]]]:
    """The plan text and the stage sizes ``(width, height)`` in pixels from ``samples``' size to ``target``."""
    base = (samples.shape[-1] * LATENT_CELL, samples.shape[-2] * LATENT_CELL)
    tw, th = int(target[0]), int(target[1])
    if (tw, th) == base:
        raise SelfCascadeError(f"target {tw}x{th} px is the size of the input latent already; set width/height "
                               f"larger than {base[0]}x{base[1]} px (e.g. {base[0] * 2}x{base[1] * 2}).")
    text, sizes = describe_plan(base, (tw, th))
    return text, sizes


def upscale(model, positive, negative, latent: dict, settings: StageSettings, target: tuple[int, int],
            upsamplers=None, *, disable_pbar: bool = False) -> tuple[dict, list[dict], str]:
    """Run every stage from ``latent`` to ``target`` = (width, height) px; returns (final, per-stage latents, plan).

    ``settings`` holds the sampling inputs of every stage (its scale/width/height are ignored: each
    stage gets the plan's size); stage i uses ``settings.seed + i``. All inputs are checked before
    the first stage samples; between stages the user's cancel is honoured.
    """
    import comfy.model_management
    import comfy.utils

    samples, _ = validate_stage(model, latent, settings.replace(scale=2.0, width=0, height=0),
                                tuned=upsamplers is not None)
    text, sizes = plan_for(samples, target)
    seeds = [settings.seed + i for i in range(len(sizes))]
    if seeds[-1] > SEED_MAX:
        raise SelfCascadeError(f"'seed' = {settings.seed}: stage {len(sizes)} would use seed {seeds[-1]}, above "
                               f"{SEED_MAX}; use a seed at most {SEED_MAX - len(sizes) + 1}.")
    plan = f"{text}, seeds {', '.join(map(str, seeds))}"
    logger.info("Self-Cascade Upscale: %s", plan)
    pbar = comfy.utils.ProgressBar(len(sizes))
    outputs: list[dict] = []
    current = latent
    for i, ((w, h), seed) in enumerate(zip(sizes, seeds, strict=True)):
        comfy.model_management.throw_exception_if_processing_interrupted()
        stage = settings.replace(seed=seed, width=w, height=h)
        current = cascade_stage(model, positive, negative, current, stage, upsamplers, disable_pbar=disable_pbar)
        outputs.append(current)
        pbar.update_absolute(i + 1, len(sizes))
    return current, outputs, plan


class SelfCascadeUpscale(io.ComfyNode):
    """Base LATENT -> target width x height in one node: plans the stages and runs them all."""

    @classmethod
    def define_schema(cls) -> io.Schema:

        size = dict(min=LATENT_CELL, max=SIZE_MAX, step=LATENT_CELL)
        return io.Schema(
            node_id="SelfCascadeUpscale",
            display_name="Self-Cascade Upscale (to any size)",
            category=CATEGORY,
            description="Self-Cascade from a finished base latent to any width x height in one node: plans "
                        "R = ceil(log4(target pixels / base pixels)) stages (each at most 4x the pixels, the "
                        "paper's rule) and runs them all. Stage i uses seed + i. Connect upsamplers for the "
                        "tuned version.",
            inputs=[
                *model_inputs("The finished base latent (e.g. a KSampler output)."),
                io.Int.Input("width", default=2048, tooltip="Final width in pixels (multiple of 8, not smaller "
                                                            "than the latent's width).", **size),
                io.Int.Input("height", default=2048, tooltip="Final height in pixels (multiple of 8, not smaller "
                                                             "than the latent's height).", **size),
                *sampling_inputs(
                    seed_tooltip="Noise seed of the first stage; stage k (0, 1, ...) uses seed + k. Within a stage: "
                                 + SEED_TOOLTIP,
                    steps_tooltip=STEPS_TOOLTIP + " Same for every stage.",
                    scheduler_tooltip="Scheduler of the whole schedule; each stage runs its part from K to 0.",
                    upsamplers_tooltip="Optional time-aware feature upsamplers (tuned version) for every stage. "
                                       "Leave empty for the tuning-free cascade."),
            ],
            outputs=[
                io.Latent.Output(display_name="latent", tooltip="The finished latent at exactly width x height."),
                io.Latent.Output(display_name="stages", is_output_list=True,
                                 tooltip="Every stage's finished latent in order (the last one is 'latent'). A list: "
                                         "a node connected here runs once per stage (e.g. decode and preview each)."),
                io.String.Output(display_name="plan", tooltip="The stages as text: size and per-side factor of each, "
                                                              "and each stage's seed."),
            ],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent, width, height, upscale_method, seed, steps, cfg,
                sampler_name, scheduler, K, upsamplers=None, strength=1.0,
                end_timestep=DEFAULT_END_TIMESTEP) -> io.NodeOutput:
        import comfy.utils

        settings = StageSettings(upscale_method=upscale_method, seed=seed, steps=steps, cfg=cfg,
                                 sampler_name=sampler_name, scheduler=scheduler, K=K, strength=strength,
                                 end_timestep=end_timestep)
        final, stages, plan = upscale(model, positive, negative, latent, settings, (width, height), upsamplers,
                                      disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED)
        return io.NodeOutput(final, stages, plan)


NODES = (SelfCascadeUpscale,)
