"""The tuned patch at sampling time: one immutable :class:`UpsamplerWrapper` serves three ComfyUI wrappers.

- OUTER_SAMPLE (:meth:`UpsamplerWrapper.outer_sample`): when sampling starts, maps ``end_timestep`` to the raw
  timestep of the model being sampled (``model_sampling`` as the sampled clone has it, so a model-sampling
  node applied after Apply Upsamplers counts, as ComfyUI's EasyCache resolves its window) and puts a fresh
  :class:`RunState` into that run's transformer_options.
- CALC_COND_BATCH (:meth:`UpsamplerWrapper.add_grid`): the full latent's grid into every cond
  (``nodes/regions.py``), so a call on an area crop or a tile gets the matching part of the pivot.
- DIFFUSION_MODEL (``__call__``): per UNet call, Eq. 7-8: the clean pivot through the frozen input and middle
  blocks with the current ``emb`` and context, each tap's feature upsampled by the time-aware upsamplers and
  ``strength *`` that added to h after the skip is stored (``input_block_patch_after_skip``; the middle tap via
  ``output_block_patch`` at ("output", 0)), in rows whose timestep is above ``end_timestep``.

The per-call wrapper reads nothing back to the host and branches on no tensor value (a step can be captured
in a CUDA graph): rows are gated on the device with ``torch.where``, so a row at or below ``end_timestep``
keeps h bit for bit; the pivot pass then runs for nothing, the price of not reading ``timesteps``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import torch

from .regions import GRID_KEY, fit, full_grid, is_tile, pivot_for
from .timesteps import model_sampling_of, model_timestep

logger = logging.getLogger(__name__)

#: transformer_options key of the per-run state.
RUN_KEY = "self_cascade"
#: Keys of transformer_options that the pivot pass does not inherit: the frozen model's own
#: features are wanted, not those shaped by other packs' block/attention patches.
_PIVOT_DROP = ("patches", "patches_replace", "wrappers", "callbacks")


@dataclass
class RunState:
    """What one sampling run resolves or learns: the gate, the size of the pass, warnings given, the pivot."""

    end_raw: float
    full: tuple[int, int] | None = None
    warned: set = field(default_factory=set)
    pivot: tuple | None = None  # (pivot, device, dtype, scaled pivot)

    def warn_once(self, message: str) -> None:
        if message not in self.warned:
            self.warned.add(message)
            logger.warning("Self-Cascade: %s", message)


def model_emb(unet, x: torch.Tensor, timesteps: torch.Tensor, y, transformer_options: dict) -> torch.Tensor:
    """The time embedding exactly as UNetModel._forward computes it (emb_patch and label_emb included)."""
    from comfy.ldm.modules.diffusionmodules.util import timestep_embedding

    emb = unet.time_embed(timestep_embedding(timesteps, unet.model_channels, repeat_only=False).to(x.dtype))
    for p in transformer_options.get("patches", {}).get("emb_patch", []):
        emb = p(emb, unet.model_channels, transformer_options)
    if unet.num_classes is not None:
        emb = emb + unet.label_emb(y)
    return emb


def pivot_features(unet, pivot: torch.Tensor, emb: torch.Tensor, context, taps, transformer_options: dict,
                   **kwargs) -> list[torch.Tensor]:
    """The frozen UNet's features of ``pivot`` at ``taps`` (input blocks, then the middle block)."""
    from comfy.ldm.modules.diffusionmodules.openaimodel import forward_timestep_embed

    opts = {k: v for k, v in transformer_options.items() if k not in _PIVOT_DROP}
    opts.update(original_shape=list(pivot.shape), transformer_index=0)
    extra = {k: kwargs.get(k) for k in ("time_context", "num_video_frames", "image_only_indicator")}
    if extra["num_video_frames"] is None:
        extra["num_video_frames"] = unet.default_num_video_frames
    wanted = {t.block for t in taps}
    last_input = max((t.block[1] for t in taps if t.block[0] == "input"), default=-1)
    feats: dict[tuple[str, int], torch.Tensor] = {}
    h = pivot
    for i, module in enumerate(unet.input_blocks):
        if i > last_input and ("middle", 0) not in wanted:
            break
        opts["block"] = ("input", i)
        h = forward_timestep_embed(module, h, emb, context, opts, **extra)
        if ("input", i) in wanted:
            feats[("input", i)] = h
    if ("middle", 0) in wanted:
        opts["block"] = ("middle", 0)
        feats[("middle", 0)] = forward_timestep_embed(unet.middle_block, h, emb, context, opts, **extra)
    return [feats[t.block] for t in taps]


@dataclass(frozen=True, eq=False)
class UpsamplerWrapper:
    """The tuned patch's settings, fixed when built (``nodes/patch.make_wrapper``).

    ``upsamplers``: the set's module: the managed set's manual-cast modules (cast per layer to x's dtype,
    ``dtype`` None) or a set its owner trains (``dtype`` float32: the wrapper moves it to x's device).
    ``pivot``: the clean latent as stored in a LATENT dict; ``slot``, when set, is an object whose ``pivot``
    attribute replaces it (training assigns one per batch). ``end_raw``: ``end_timestep`` on the raw axis of
    the model it was built for, used only outside a sampler run (which resolves its own).
    """

    upsamplers: torch.nn.Module
    pivot: torch.Tensor
    strength: float
    end_timestep: float
    end_raw: float
    latent_in: Any = None
    dtype: torch.dtype | None = None
    slot: Any = None

    def outer_sample(self, executor, *args, **kwargs):
        """OUTER_SAMPLE: resolve the gate on the sampled model's schedule, for this run only."""
        import comfy.model_patcher

        guider = executor.class_obj
        original = guider.model_options
        guider.model_options = comfy.model_patcher.create_model_options_clone(original)
        end_raw = model_timestep(model_sampling_of(guider.model_patcher), self.end_timestep)
        guider.model_options.setdefault("transformer_options", {})[RUN_KEY] = RunState(end_raw=end_raw)
        try:
            return executor(*args, **kwargs)
        finally:
            guider.model_options = original

    def add_grid(self, executor, model, conds, x_in: torch.Tensor, timestep, model_options: dict):
        """CALC_COND_BATCH: every cond of the pass carries the full latent's grid; the run notes the full size."""
        import comfy.conds

        run = model_options.get("transformer_options", {}).get(RUN_KEY)
        if isinstance(run, RunState) and x_in.ndim == 4 and self.strength != 0.0:
            run.full = tuple(x_in.shape[-2:])
            grid = comfy.conds.CONDNoiseShape(full_grid(x_in))
            conds = [None if c is None else [{**d, "model_conds": {**d.get("model_conds", {}), GRID_KEY: grid}}
                                             for d in c] for c in conds]
        return executor(model, conds, x_in, timestep, model_options)

    def _scaled(self, pivot: torch.Tensor, x: torch.Tensor, run: RunState | None) -> torch.Tensor:
        """The pivot scaled once with ``process_latent_in``, on x's device and dtype (kept for the run)."""
        if run is not None and run.pivot is not None and run.pivot[0] is pivot and run.pivot[1:3] == (x.device, x.dtype):
            return run.pivot[3]
        p = self.latent_in(pivot) if self.latent_in is not None else pivot
        p = p.to(device=x.device, dtype=x.dtype)
        if run is not None:
            run.pivot = (pivot, x.device, x.dtype, p)
        return p

    def _plain_reason(self, pivot: torch.Tensor, x: torch.Tensor, grid, run: RunState | None) -> str | None:
        full = run.full if run is not None and run.full is not None else tuple(x.shape[-2:])
        cropped_along = grid is not None and tuple(grid.shape[-2:]) == tuple(x.shape[-2:])
        if tuple(x.shape[-2:]) != full and not cropped_along:
            return (f"the model was called on a {x.shape[-2]}x{x.shape[-1]} part of the {full[0]}x{full[1]} latent "
                    "by something that does not say which part; the upsamplers are off for those calls.")
        if is_tile(pivot, full):
            return (f"the sampled latent ({full[0]}x{full[1]}) is smaller than the pivot ({pivot.shape[-2]}x"
                    f"{pivot.shape[-1]}): a tile of a tiled sampler, whose place in the image is unknown; the "
                    "upsamplers are off for it. Use Self-Cascade Stage/Upscale, or a tiler that crops conds.")
        return None

    def __call__(self, executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        grid = kwargs.pop(GRID_KEY, None)
        if self.strength == 0.0:  # a setting, not a value on the device
            return executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        run = transformer_options.get(RUN_KEY)
        run = run if isinstance(run, RunState) else None
        pivot = self.slot.pivot if self.slot is not None else self.pivot
        reason = self._plain_reason(pivot, x, grid, run)
        if reason is not None:  # decided by shapes, never by values
            if run is not None:
                run.warn_once(reason)
            else:
                logger.warning("Self-Cascade: %s", reason)
            return executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        end_raw = run.end_raw if run is not None else self.end_raw
        # strict: at t == end_timestep the plain model runs (the official code's t > 100)
        on = (timesteps > end_raw)[:, None, None, None]
        unet, uset = executor.class_obj, self.upsamplers
        taps = uset.info.taps
        dtype = self.dtype or x.dtype
        if self.dtype is not None:  # a set its owner trains: it follows x's device
            ref = next(uset.parameters())
            if ref.device != x.device or ref.dtype != dtype:
                uset.to(device=x.device, dtype=dtype)
        n_chunks = len(transformer_options.get("cond_or_uncond", [None])) or 1
        with torch.no_grad():
            emb = model_emb(unet, x, timesteps, y, transformer_options)
            p = pivot_for(self._scaled(pivot, x, run), x, n_chunks, run.full if run is not None else None, grid)
            feats = pivot_features(unet, p, emb, context, taps, transformer_options, **kwargs)
        gain = self.strength * on.to(dtype)  # a tensor: all-on rows stay bit-identical to an ungated add
        index = {t.block: i for i, t in enumerate(taps)}

        def add(block, h: torch.Tensor) -> torch.Tensor:
            i = index[block]
            return torch.where(on, h + fit(gain * uset(i, feats[i].to(dtype), emb.to(dtype)), h), h)

        def after_skip(h: torch.Tensor, opts: dict) -> torch.Tensor:
            block = opts.get("block")
            return add(block, h) if block in index and block[0] == "input" else h

        def before_concat(h: torch.Tensor, hsp: torch.Tensor, opts: dict):
            if opts.get("block") == ("output", 0) and ("middle", 0) in index:
                h = add(("middle", 0), h)
            return h, hsp

        opts: dict[str, Any] = dict(transformer_options)
        patches = {k: list(v) for k, v in opts.get("patches", {}).items()}
        patches["input_block_patch_after_skip"] = [after_skip] + patches.get("input_block_patch_after_skip", [])
        patches["output_block_patch"] = [before_concat] + patches.get("output_block_patch", [])
        opts["patches"] = patches
        return executor(x, timesteps, context, y, control, opts, **kwargs)
