"""SelfCascadePivotUpsample: LATENT -> LATENT at the next stage's size, remembering the pivot."""
from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from ..upsampler.pivot import UPSCALE_METHODS, resize_latent
from .checks import check_choice, check_latent, pivot_size
from .common import CATEGORY, SCALE_MAX, SIZE_MAX
from .compat import advanced, schema

logger = logging.getLogger(__name__)

__all__ = ["NODES", "PIVOT_KEY", "check_latent", "make_pivot", "upsample_pivot"]

#: Key under which the clean previous-stage latent travels inside a LATENT dict, so that the
#: tuned patch (SelfCascadeApplyUpsamplers) can compute pivot features from it.
PIVOT_KEY = "self_cascade_pivot"


def make_pivot(latent: dict, samples: torch.Tensor, size: tuple[int, int], method: str) -> dict:
    """The pivot LATENT: ``samples`` resized to latent ``size`` (Eq. 6's up(z0)), the original kept
    under PIVOT_KEY, the other keys of ``latent`` carried over. Inputs are assumed checked; never mutates."""
    out = {k: v for k, v in latent.items() if k not in ("samples", "noise_mask", PIVOT_KEY)}
    if "noise_mask" in latent:
        logger.info("Self-Cascade: dropping the latent's noise_mask (it does not apply at the new size).")
    out["samples"] = resize_latent(samples, size, method)
    out[PIVOT_KEY] = samples
    return out


def upsample_pivot(latent: dict, scale: float, method: str, width: int = 0, height: int = 0) -> dict:
    """The Pivot Upsample node's work: check the inputs, then :func:`make_pivot`."""
    samples = check_latent(latent)
    check_choice(method, list(UPSCALE_METHODS), "upscale_method")
    return make_pivot(latent, samples, pivot_size(samples, scale, width, height), method)


class SelfCascadePivotUpsample(io.ComfyNode):
    """Upsample the previous stage's latent into the pivot of the next stage (Eq. 6's up(z0))."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return schema(
            node_id="SelfCascadePivotUpsample",
            display_name="Self-Cascade Pivot Upsample",
            category=CATEGORY,
            search_aliases=["upscale latent", "resize latent", "pivot"],
            description="Enlarges a finished latent to the next stage's size: the first step of a Self-Cascade "
                        "stage built by hand (then Renoise and SamplerCustom; Self-Cascade Stage does all three). "
                        "The enlarged latent is the paper's 'pivot' up(z0) (Eq. 6); the original travels inside "
                        "the LATENT so the tuned patch (Apply Upsamplers) can use it.",
            inputs=[
                io.Latent.Input("latent", tooltip="The finished latent of the previous stage (e.g. a KSampler output)."),
                io.Float.Input("scale", default=2.0, min=1.0, max=SCALE_MAX, step=0.01,
                               tooltip="Factor per side (2.0 = 4x the pixels, the paper's stage). Ignored when width and height are set."),
                io.Combo.Input("upscale_method", options=list(UPSCALE_METHODS), default="bicubic",
                               tooltip="bicubic: official code; bilinear: the paper; nearest-exact and area for comparison.",
                               **advanced(io.Combo.Input)),
                io.Int.Input("width", default=0, min=0, max=SIZE_MAX, step=8,
                             tooltip="Explicit target width in pixels (multiple of 8). 0 = use scale."),
                io.Int.Input("height", default=0, min=0, max=SIZE_MAX, step=8,
                             tooltip="Explicit target height in pixels (multiple of 8). 0 = use scale."),
            ],
            outputs=[io.Latent.Output(display_name="pivot", tooltip="The upsampled latent, with the original kept for the tuned patch.")],
        )

    @classmethod
    def execute(cls, latent, scale, upscale_method, width, height) -> io.NodeOutput:
        return io.NodeOutput(upsample_pivot(latent, scale, upscale_method, width, height))


NODES = (SelfCascadePivotUpsample,)
