"""The benchmark's sampling methods (one per table row), all on ComfyUI's own code paths.

Every sampling call uses the same sampler, scheduler, ``steps`` setting and cfg (1 for the
unconditional model; the captioned model's runs pass cfg > 1, with the null caption as negative). Direct, hires fix
and Deep Shrink go through ``nodes.common_ksampler`` (Deep Shrink: core ``PatchModelAddDownscale``);
the cascade rows through the pack's ``cascade_stage``, which executes only the part of its schedule
below K (as in the paper); ComfyUI's ``denoise`` (hires fix) keeps the number of executed steps.
"""
from __future__ import annotations

import math
import time

import torch

SAMPLER, SCHEDULER, CFG = "euler", "normal", 1.0


def stage_sizes(base: tuple[int, int], target: tuple[int, int]) -> list[tuple[int, int]]:
    """Sizes after each x2-per-side stage (the last stage lands exactly on the target)."""
    n = max(1, math.ceil(math.log(target[0] * target[1] / (base[0] * base[1]), 4) - 1e-9))
    return [(round(base[0] * (target[0] / base[0]) ** ((i + 1) / n)),
             round(base[1] * (target[1] / base[1]) ** ((i + 1) / n))) for i in range(n)]


def timed(fn, *a, **k):
    """(result, (wall seconds, process CPU seconds)); CPU time is the fairer cost on shared cores."""
    t, c = time.perf_counter(), time.process_time()
    out = fn(*a, **k)
    return out, (time.perf_counter() - t, time.process_time() - c)


class Sampling:
    """The methods; ``model`` is the base ModelPatcher, ``steps`` the schedule length of every call."""

    def __init__(self, model, pos, neg, steps: int, cfg: float = CFG):
        from ...nodes.cascade import StageSettings, cascade_stage

        self.model, self.pos, self.neg, self.steps, self.cfg = model, pos, neg, steps, cfg
        self._stage, self._settings = cascade_stage, StageSettings

    def ksample(self, model, latent: torch.Tensor, seed: int, denoise: float = 1.0) -> torch.Tensor:
        import nodes  # ComfyUI's nodes.py

        out = nodes.common_ksampler(model, seed, self.steps, self.cfg, SAMPLER, SCHEDULER, self.pos, self.neg,
                                    {"samples": latent}, denoise=denoise, disable_noise=False)[0]
        return out["samples"]

    def base(self, n: int, hw: tuple[int, int], seed: int) -> torch.Tensor:
        return self.ksample(self.model, torch.zeros(n, 3, *hw), seed)

    def direct(self, n: int, target: tuple[int, int], seed: int, model=None) -> torch.Tensor:
        """The model asked for the target size at once (also the fine-tuned / LoRA models' use)."""
        return self.ksample(model if model is not None else self.model, torch.zeros(n, 3, *target), seed)

    def hires(self, base_lat: torch.Tensor, target: tuple[int, int], seed: int) -> torch.Tensor:
        import comfy.utils

        up = comfy.utils.common_upscale(base_lat, target[1], target[0], "bicubic", "disabled")
        return self.ksample(self.model, up, seed, denoise=0.7)

    def deep_shrink(self, n: int, base_hw: tuple[int, int], target: tuple[int, int], seed: int) -> torch.Tensor:
        from comfy_extras.nodes_model_downscale import PatchModelAddDownscale

        factor = target[0] / base_hw[0]
        m = PatchModelAddDownscale.execute(self.model, 1, factor, 0.0, 0.35, True, "bicubic", "bicubic")[0]
        return self.ksample(m, torch.zeros(n, 3, *target), seed)

    def cascade(self, base_lat: torch.Tensor, base_hw: tuple[int, int], target: tuple[int, int], seed: int,
                upsamplers=None, K: float = 700.0, strength: float = 1.0,
                K_later: float | None = None) -> torch.Tensor:
        """``K_later``: K of every stage after the first (None: K everywhere)."""
        lat = {"samples": base_lat}
        for i, hw in enumerate(stage_sizes(base_hw, target)):
            k = K if i == 0 or K_later is None else K_later
            # every stage here is exactly x2 per side; the node's width/height inputs count 8 px per latent
            # cell (SD's VAE), which this pixel-space model does not have, so the scale input is used
            settings = self._settings(scale=2.0, upscale_method="bicubic", seed=seed, steps=self.steps, cfg=self.cfg,
                                      sampler_name=SAMPLER, scheduler=SCHEDULER, K=float(k), strength=strength)
            lat = self._stage(self.model, self.pos, self.neg, lat, settings, upsamplers, disable_pbar=True)
            if tuple(lat["samples"].shape[-2:]) != hw:
                raise RuntimeError(f"stage gave {tuple(lat['samples'].shape)}, expected {hw}")
        return lat["samples"]
