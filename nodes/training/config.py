"""Settings of one training run (paper Algorithm 1; defaults follow the paper and the official code)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ...upsampler.modules import DEFAULT_END_TIMESTEP
from ...upsampler.pivot import target_size
from ...upsampler.renoise import DEFAULT_K
from ..common import SelfCascadeError

#: Pivot modes (name -> what the pivot of a training pair is).
PIVOT_MODES: dict[str, str] = {
    "downsample": "E(Downsample(x0)): the paper's Algorithm 1",
    "generated": "a base-model sample at the pivot size from the caption: the official code's pseudo pivot",
}

#: Config fields a resumed run must share with its checkpoint (others, e.g. steps, may change).
RESUME_MUST_MATCH = ("width", "height", "scale", "variant", "variant_size", "K", "end_timestep",
                     "pivot_mode", "latent_cell")


@dataclass
class TrainConfig:
    """Settings of one training run. ``batch_size`` is the global batch: the samples one optimiser
    step consumes, whatever the number of processes sharing it."""

    width: int = 1024  # training crop (high-res target) in pixels
    height: int = 1024
    scale: float = 2.0  # per side; pivot = crop / scale
    steps: int = 1000
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    batch_size: int = 1
    K: float = DEFAULT_K  # t ~ U{floor(end_timestep)+1 .. K}
    end_timestep: float = DEFAULT_END_TIMESTEP
    pivot_mode: str = "downsample"
    variant: str = "official"
    variant_size: int = 0
    seed: int = 0
    checkpoint_every: int = 100
    caption_dropout: float = 0.0
    gradient_checkpointing: str = "auto"  # auto: on for CUDA, off for CPU; "on" / "off"
    mixed_precision: str = "auto"  # auto: bf16 autocast on CUDA when supported, else fp32; "bf16", "fp16", "fp32"
    latent_cell: int = 8  # pixels per latent cell of the encoder
    generated_steps: int = 20
    generated_cfg: float = 5.0
    log_every: int = 10

    def validate(self) -> None:
        checks = [
            (self.steps >= 1, "steps must be at least 1"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.learning_rate > 0 and math.isfinite(self.learning_rate), "learning_rate must be > 0"),
            (self.scale > 1.0 and math.isfinite(self.scale), "scale must be > 1 (the stage goes up in size)"),
            (0 <= self.end_timestep < self.K <= 999, "need 0 <= end_timestep < K <= 999"),
            (self.pivot_mode in PIVOT_MODES, f"pivot_mode must be one of {sorted(PIVOT_MODES)}"),
            (0.0 <= self.caption_dropout <= 1.0, "caption_dropout must be within 0..1"),
            (self.checkpoint_every >= 0, "checkpoint_every must be >= 0 (0 = only at the end / on cancel)"),
            (self.gradient_checkpointing in ("auto", "on", "off"), "gradient_checkpointing must be auto, on or off"),
            (self.mixed_precision in ("auto", "bf16", "fp16", "fp32"),
             "mixed_precision must be auto, bf16, fp16 or fp32"),
        ]
        for ok, msg in checks:
            if not ok:
                raise SelfCascadeError(msg)

    def latent_sizes(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """((crop_h, crop_w), (pivot_h, pivot_w)) in latent cells; error when the sizes do not divide."""
        cell = self.latent_cell
        if self.width % cell or self.height % cell:
            raise SelfCascadeError(f"width/height {self.width}x{self.height} must be multiples of {cell} pixels "
                                   "(the VAE's latent scale).")
        crop = (self.height // cell, self.width // cell)
        pivot = (max(1, round(crop[0] / self.scale)), max(1, round(crop[1] / self.scale)))
        if target_size(*pivot, self.scale) != crop:
            raise SelfCascadeError(
                f"{self.width}x{self.height} px is not reachable from a whole-latent pivot with scale {self.scale}; "
                f"use e.g. {round(pivot[1] * self.scale) * cell}x{round(pivot[0] * self.scale) * cell}.")
        return crop, pivot


def preflight(cfg: TrainConfig, *, n_images: int | None = None, has_empty: bool = True,
              world_size: int = 1) -> tuple[tuple[int, int], tuple[int, int]]:
    """Every rule a run's inputs must meet before anything is encoded or trained, in one place (the node, the
    training core and the command-line trainer all call it). Returns :meth:`TrainConfig.latent_sizes`.

    ``n_images``: how many training images there are (None: not known yet); ``has_empty``: whether the
    empty-prompt conditioning exists (caption dropout needs it); ``world_size``: processes sharing a batch.
    """
    cfg.validate()
    sizes = cfg.latent_sizes()
    if n_images is not None and n_images < 1:
        raise SelfCascadeError("no training images: give images (the node's 'images' input or a folder), at least "
                               "one of them readable.")
    if cfg.caption_dropout > 0 and not has_empty:
        raise SelfCascadeError("caption_dropout > 0 needs the empty-prompt conditioning; connect a text encoder "
                               "(clip) or set caption_dropout to 0.")
    if cfg.batch_size < world_size:
        raise SelfCascadeError(f"batch_size {cfg.batch_size} is smaller than the {world_size} processes; each process "
                               "needs at least one sample per step (batch_size is the global batch).")
    return sizes
