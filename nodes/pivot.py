"""SelfCascadePivotUpsample: LATENT -> LATENT at the next stage's size, remembering the pivot."""
from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from ..upsampler.pivot import UPSCALE_METHODS, resize_latent, target_size
from .common import CATEGORY, SelfCascadeError

logger = logging.getLogger(__name__)

#: Key under which the clean previous-stage latent travels inside a LATENT dict, so that the
#: tuned patch (SelfCascadeApplyUpsamplers) can compute pivot features from it.
PIVOT_KEY = "self_cascade_pivot"
#: Spatial downscale of SD-family VAEs: latent cells per pixel side.
LATENT_CELL = 8


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


def pivot_size(samples, scale: float, width: int, height: int) -> tuple[int, int]:
    """Latent (h, w) of the next stage from a per-side ``scale`` or explicit pixel ``width``/``height``."""
    h, w = samples.shape[-2], samples.shape[-1]
    if width or height:
        if width % LATENT_CELL or height % LATENT_CELL or not (width and height):
            raise SelfCascadeError(
                f"width/height {width}x{height}: set both, as multiples of {LATENT_CELL} pixels "
                "(or set both to 0 to use 'scale').")
        size = (height // LATENT_CELL, width // LATENT_CELL)
    else:
        if scale < 1.0:
            raise SelfCascadeError(f"scale {scale} would shrink the image; Self-Cascade goes up in size. Use a scale >= 1.")
        size = target_size(h, w, scale)
    if size[0] < h or size[1] < w:
        raise SelfCascadeError(f"target {size[1] * LATENT_CELL}x{size[0] * LATENT_CELL} px is smaller than the "
                               f"input {w * LATENT_CELL}x{h * LATENT_CELL} px on one side; choose a larger size.")
    return size


def upsample_pivot(latent: dict, scale: float, method: str, width: int = 0, height: int = 0) -> dict:
    """The pivot step shared by the composable node and SelfCascadeStage. Never mutates ``latent``."""
    samples = check_latent(latent)
    size = pivot_size(samples, scale, width, height)
    out = {k: v for k, v in latent.items() if k not in ("samples", "noise_mask", PIVOT_KEY)}
    if "noise_mask" in latent:
        logger.info("Self-Cascade: dropping the latent's noise_mask (it does not apply at the new size).")
    out["samples"] = resize_latent(samples, size, method)
    out[PIVOT_KEY] = samples
    return out


class SelfCascadePivotUpsample(io.ComfyNode):
    """Upsample the previous stage's latent into the pivot of the next stage (Eq. 6's up(z0))."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SelfCascadePivotUpsample",
            display_name="Self-Cascade Pivot Upsample",
            category=CATEGORY,
            description="Upsample a finished latent to the next cascade stage's size (the 'pivot'). "
                        "Keeps the original latent inside the LATENT so the tuned patch can use it.",
            inputs=[
                io.Latent.Input("latent", tooltip="The finished latent of the previous stage (e.g. a KSampler output)."),
                io.Float.Input("scale", default=2.0, min=1.0, max=8.0, step=0.01,
                               tooltip="Factor per side (2.0 = 4x the pixels, the paper's stage). Ignored when width and height are set."),
                io.Combo.Input("upscale_method", options=list(UPSCALE_METHODS), default="bicubic",
                               tooltip="bicubic: official code; bilinear: the paper; nearest-exact and area for comparison."),
                io.Int.Input("width", default=0, min=0, max=16384, step=8,
                             tooltip="Explicit target width in pixels (multiple of 8). 0 = use scale."),
                io.Int.Input("height", default=0, min=0, max=16384, step=8,
                             tooltip="Explicit target height in pixels (multiple of 8). 0 = use scale."),
            ],
            outputs=[io.Latent.Output(display_name="pivot", tooltip="The upsampled latent, with the original kept for the tuned patch.")],
        )

    @classmethod
    def execute(cls, latent, scale, upscale_method, width, height) -> io.NodeOutput:
        return io.NodeOutput(upsample_pivot(latent, scale, upscale_method, width, height))


NODES = (SelfCascadePivotUpsample,)
