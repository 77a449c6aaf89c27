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

from ..upsampler.pivot import CROP_METHODS, center_crop
from .cascade import StageSettings, cascade_stage
from .checks import check_choice, check_k, validate_stage
from .common import (
    CATEGORY,
    DEFAULT_END_TIMESTEP,
    LATENT_CELL,
    SEED_MAX,
    SEED_TOOLTIP,
    SIZE_MAX,
    STEPS_TOOLTIP,
    SelfCascadeError,
)
from .compat import schema
from .stage import describe_plan
from .stage_inputs import k_later_input, k_mode_input, model_inputs, sampling_inputs
from .timesteps import cascade_sigmas, resolve_k

logger = logging.getLogger(__name__)

__all__ = ["NODES", "SIZE_MAX", "SelfCascadeUpscale", "crop_base", "plan_for", "upscale"]


def plan_for(samples: torch.Tensor, target: tuple[int, int]) -> tuple[str, list[tuple[int, int]]]:
    """The plan text and the stage sizes ``(width, height)`` in pixels from ``samples``' size to ``target``."""
    base = (samples.shape[-1] * LATENT_CELL, samples.shape[-2] * LATENT_CELL)
    tw, th = int(target[0]), int(target[1])
    if (tw, th) == base:
        raise SelfCascadeError(f"target {tw}x{th} px is the size of the input latent already; set width/height "
                               f"larger than {base[0]}x{base[1]} px (e.g. {base[0] * 2}x{base[1] * 2}).")
    text, sizes = describe_plan(base, (tw, th))
    return text, sizes


def crop_base(latent: dict, samples: torch.Tensor, target: tuple[int, int], crop: str) -> tuple[dict, torch.Tensor, str]:
    """The base latent cut to the target's aspect ratio before the first stage (``crop`` "center", the rule of
    ComfyUI's Upscale Latent), and a sentence saying what was cut; unchanged with "disabled"."""
    if check_choice(crop, CROP_METHODS, "crop") == "disabled":
        return latent, samples, ""
    h, w = samples.shape[-2:]
    cropped = center_crop(samples, target)
    ch, cw = cropped.shape[-2:]
    if (ch, cw) == (h, w):
        return latent, samples, "crop center: nothing to cut (same aspect ratio); "
    if ch < 1 or cw < 1:
        raise SelfCascadeError(f"crop center: a {w * LATENT_CELL}x{h * LATENT_CELL} px base cut to the aspect "
                               f"ratio of {target[0]}x{target[1]} leaves nothing; set crop to disabled or choose "
                               "a less extreme width/height.")
    cut = (f"{(w - cw) * LATENT_CELL} px of width (left and right)" if cw < w
           else f"{(h - ch) * LATENT_CELL} px of height (top and bottom)")
    note = (f"crop center: {w * LATENT_CELL}x{h * LATENT_CELL} -> {cw * LATENT_CELL}x{ch * LATENT_CELL} "
            f"({cut} cut before the first stage); ")
    out = {k: v for k, v in latent.items() if k != "noise_mask"}
    out["samples"] = cropped
    return out, cropped, note


def _stage_ks(model, k: float, k_later: float, k_mode: str) -> tuple[float, float, str]:
    """(K of the first stage, K of the later ones, the plan's words for them), converted under K_mode auto."""
    first = resolve_k(model, check_k(k), k_mode)
    later = first if not k_later else resolve_k(model, check_k(k_later, "K_later"), k_mode, "K_later")
    words = f"K {first:g}" + (f", later stages K {later:g}" if later != first else "")
    if k_mode == "auto":
        given = f"{k:g}" + (f"/{k_later:g}" if k_later else "")
        words += f" (K_mode auto from {given} in SD1.x units)"
    return first, later, words


def upscale(model, positive, negative, latent: dict, settings: StageSettings, target: tuple[int, int],
            upsamplers=None, *, disable_pbar: bool = False, k_mode: str = "fixed", k_later: float = 0.0,
            crop: str = "disabled") -> tuple[dict, list[dict], str]:
    """Run every stage from ``latent`` to ``target`` = (width, height) px; returns (final, per-stage latents, plan).

    ``settings`` holds the sampling inputs of every stage (its scale/width/height are ignored: each
    stage gets the plan's size); stage i uses ``settings.seed + i``; stages after the first use
    ``k_later`` (0 = ``settings.K``), both read per ``k_mode`` (``nodes.timesteps.resolve_k``). ``crop``
    "center" cuts the base to the target's aspect ratio first. All inputs are checked before the first
    stage samples; one progress bar runs over the executed steps of every stage; between stages the
    user's cancel is honoured.
    """
    import comfy.model_management
    import comfy.utils

    samples, _ = validate_stage(model, latent, settings.replace(scale=2.0, width=0, height=0),
                                tuned=upsamplers is not None)
    k_first, k_rest, k_words = _stage_ks(model, settings.K, k_later, k_mode)
    latent, samples, crop_note = crop_base(latent, samples, target, crop)
    text, sizes = plan_for(samples, target)
    seeds = [settings.seed + i for i in range(len(sizes))]
    if seeds[-1] > SEED_MAX:
        raise SelfCascadeError(f"'seed' = {settings.seed}: stage {len(sizes)} would use seed {seeds[-1]}, above "
                               f"{SEED_MAX}; use a seed at most {SEED_MAX - len(sizes) + 1}.")
    ks = [k_first] + [k_rest] * (len(sizes) - 1)
    executed = [len(cascade_sigmas(model, k, settings.steps, settings.scheduler)[1]) - 1 for k in ks]
    plan = f"{crop_note}{text}, seeds {', '.join(map(str, seeds))}, {k_words}, {sum(executed)} steps executed"
    logger.info("Self-Cascade Upscale: %s", plan)
    pbar = comfy.utils.ProgressBar(sum(executed))
    outputs: list[dict] = []
    current = latent
    for i, ((w, h), seed, k) in enumerate(zip(sizes, seeds, ks, strict=True)):
        comfy.model_management.throw_exception_if_processing_interrupted()
        stage = settings.replace(seed=seed, width=w, height=h, K=k)
        current = cascade_stage(model, positive, negative, current, stage, upsamplers, disable_pbar=disable_pbar,
                                progress=(pbar, sum(executed[:i])))
        outputs.append(current)
    return current, outputs, plan


class SelfCascadeUpscale(io.ComfyNode):
    """Base LATENT -> target width x height in one node: plans the stages and runs them all."""

    @classmethod
    def define_schema(cls) -> io.Schema:

        size = dict(min=LATENT_CELL, max=SIZE_MAX, step=LATENT_CELL)
        return schema(
            node_id="SelfCascadeUpscale",
            display_name="Self-Cascade Upscale (to any size)",
            category=CATEGORY,
            search_aliases=["hires fix", "upscale", "high resolution", "upscale latent", "wallpaper", "4k"],
            description="Makes a finished image latent as large as you ask (any width x height) with the same "
                        "model, adding real detail instead of stretching it: the one node to use after a "
                        "KSampler. It plans R = ceil(log4(target pixels / base pixels)) stages (each at most 4x "
                        "the pixels, the paper's rule) and runs them all; stage i uses seed + i. Connect "
                        "upsamplers for the tuned version.",
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
                k_mode_input(),
                k_later_input(),
                io.Combo.Input("crop", options=list(CROP_METHODS), default="disabled", optional=True,
                               tooltip="For a target of another aspect ratio: disabled stretches the base to it; "
                                       "center first cuts the base's middle to the target's aspect ratio (as "
                                       "Upscale Latent's crop), e.g. 1024x1024 -> 1024x576 for 3840x2160. The "
                                       "plan output says what was cut."),
            ],
            outputs=[
                io.Latent.Output(display_name="latent", tooltip="The finished latent at exactly width x height."),
                io.Latent.Output(display_name="stages", is_output_list=True,
                                 tooltip="Every stage's finished latent in order (the last one is 'latent'). A list: "
                                         "a node connected here runs once per stage (e.g. decode and preview each)."),
                io.String.Output(display_name="plan", tooltip="The stages as text: size and per-side factor of each, "
                                                              "each stage's seed, the K used, the steps executed "
                                                              "and what crop cut."),
            ],
        )

    @classmethod
    def execute(cls, model, positive, negative, latent, width, height, upscale_method, seed, steps, cfg,
                sampler_name, scheduler, K, upsamplers=None, strength=1.0, end_timestep=DEFAULT_END_TIMESTEP,
                K_mode="fixed", K_later=0.0, crop="disabled") -> io.NodeOutput:
        import comfy.utils

        settings = StageSettings(upscale_method=upscale_method, seed=seed, steps=steps, cfg=cfg,
                                 sampler_name=sampler_name, scheduler=scheduler, K=K, strength=strength,
                                 end_timestep=end_timestep)
        final, stages, plan = upscale(model, positive, negative, latent, settings, (width, height), upsamplers,
                                      disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, k_mode=K_mode,
                                      k_later=K_later, crop=crop)
        return io.NodeOutput(final, stages, plan)


NODES = (SelfCascadeUpscale,)
