"""SelfCascadeUntrainedUpsamplers: a fresh (untrained) upsampler set for the connected model, no file needed.

EXPERIMENTAL. A freshly initialised set is exactly a nearest x2 upsample per tap (its last conv is
zero-initialised, ``upsampler.modules``), so the tuned patch adds ``strength * nearest_up(pivot
feature)`` to the high-resolution UNet features at each tap (paper Eq. 7-8 with the identity
upsampler). That is a feature-level reuse of the pivot without any training; its recommended
strength (``UNTRAINED_STRENGTH``) is NOT verified on Stable Diffusion. Train a real set with the
training workflow for the paper's tuned version.
"""
from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from ..upsampler.modules import UpsamplerSet
from ..upsampler.taps import derive_taps, emb_dim
from .common import CATEGORY, Upsamplers
from .managed import upsampler_patcher
from .patch import check_unet, model_family

logger = logging.getLogger(__name__)

__all__ = ["NODES", "UNTRAINED_STRENGTH", "untrained_set"]

#: The variant of the fresh set ("light": a small bottleneck; the output is nearest x2 either way).
UNTRAINED_VARIANT = "light"
#: Recommended strength for the untrained set, from the miniature benchmark's strength sweep of a fresh
#: light set (docs/BENCHMARK.md, "Untrained (fresh) set: strength"): 0.5 was best or tied-best in composition
#: and pivot IoU at 4x and 16x pixels; 1.0 lost composition at 16x. A toy model: unverified on SD.
UNTRAINED_STRENGTH = 0.5


def untrained_set(model) -> UpsamplerSet:
    """A fresh set for ``model``'s taps (seeded: the same state dict every time; the output is nearest x2)."""
    unet = check_unet(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        uset = UpsamplerSet.create(derive_taps(unet), emb_dim(unet), model_family(model), UNTRAINED_VARIANT,
                                   extra={"untrained": True})
    return uset.eval().requires_grad_(False)


class SelfCascadeUntrainedUpsamplers(io.ComfyNode):
    """A fresh upsampler set for the connected model: the tuned path with no trained file (experimental)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SelfCascadeUntrainedUpsamplers",
            display_name="Self-Cascade Untrained Upsamplers (experimental, untrained)",
            category=f"{CATEGORY}/tuned",
            description="Experimental upsamplers that need no file: try the tuned cascade before you have trained "
                        "a set. A fresh set for this model's UNet: each one is "
                        "exactly a nearest x2 upsample, so the stage adds the pivot's own UNet features, "
                        "nearest-upsampled, to the high-resolution features. Not the paper's trained upsamplers; "
                        f"the recommended strength ({UNTRAINED_STRENGTH:g}) comes from a miniature benchmark (a toy "
                        "model) and the whole option is unverified on Stable Diffusion. "
                        "Train a set with the training workflow for the real tuned version.",
            inputs=[io.Model.Input("model", tooltip="The SD1.x/2.x/SDXL-style UNet model the stage uses "
                                                    "(DiT/Flux models: use the tuning-free stage).")],
            outputs=[
                Upsamplers.Output(display_name="upsamplers",
                                  tooltip="A fresh set (nearest x2 per tap) for Stage, Upscale or Apply Upsamplers."),
                io.Float.Output(display_name="strength",
                                tooltip=f"Recommended strength for this set ({UNTRAINED_STRENGTH:g}); connect it to "
                                        "the stage's strength input."),
            ],
            is_experimental=True,
        )

    @classmethod
    def execute(cls, model) -> io.NodeOutput:
        uset = untrained_set(model)
        logger.warning("Self-Cascade: using UNTRAINED upsamplers (experimental: nearest-upsampled pivot features, "
                       "%d taps, family %s); results are unverified on Stable Diffusion.", len(uset.taps),
                       uset.info.family)
        return io.NodeOutput(upsampler_patcher(uset), UNTRAINED_STRENGTH)


NODES = (SelfCascadeUntrainedUpsamplers,)
