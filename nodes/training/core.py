"""The training core: ``train_upsamplers`` (images + a VAE encode) and ``train_on_pairs`` (already
encoded training pairs), shared by the ComfyUI node, the command-line trainer and the benchmark.

The loss runs through the real tuned patch (``nodes.patch.TrainingPatch``) on ComfyUI's
sampling path (see loop.py), so training and inference share one code path.
"""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch

from ...upsampler.checkpoint import load_checkpoint
from ...upsampler.fileformat import save_upsamplers
from ...upsampler.modules import UpsamplerSet
from ..common import SelfCascadeError
from ..patch import TrainingPatch, check_unet
from .config import TrainConfig, preflight
from .data import TrainingImages, from_image_input
from .hooks import CheckpointHooks, checkpoint_path_for
from .identity import RUN_ID_KEY
from .loop import LoopState, UpsamplerTrainingSampler, training_guider
from .pairs import BatchSampler, EncodedImage, encode_images, generate_pivots, split_conditioning
from .parallel import Parallel
from .setup import autocast_dtype, frozen, gradient_checkpointing, new_optimizer, new_upsamplers, restore

logger = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run produced. ``stopped_reason``: "completed", "non-finite loss ..." (nothing saved
    beyond the last good checkpoint) or "already complete" (resumed a finished run)."""

    upsamplers: UpsamplerSet
    losses: list[float]
    steps_done: int
    seconds: float
    stopped_reason: str
    file_path: str | None = None
    checkpoint_path: str | None = None
    checkpoint_step: int | None = None
    notes: list[str] = field(default_factory=list)


def train_upsamplers(model, images, encode: Callable, positive, *, config: TrainConfig, save_path: str | None = None,
                     resume: bool = False, interrupt_check: Callable[[], None] | None = None,
                     progress: Callable[[int, int, float], None] | None = None, empty=None,
                     run_id: str | None = None) -> TrainResult:
    """Train a fresh (or resumed) upsampler set for ``model`` on ``images``; see docs/TRAINING.md.

    ``images``: IMAGE (N, H, W, 3) 0..1, a list of them, or a TrainingImages (folder input).
    ``encode``: IMAGE batch -> latent (B, C, h, w) in LATENT space (e.g. ``vae.encode``).
    ``positive``: one CONDITIONING for all images or a list with one per image; ``empty``: the
    empty-prompt CONDITIONING used for caption dropout (required when ``caption_dropout > 0``).
    ``save_path``: final ``.safetensors``; checkpoints go to ``<name>.ckpt.safetensors`` beside it.
    Cancel (``interrupt_check`` or ComfyUI's interrupt) saves a resumable checkpoint, then re-raises.
    ``run_id``: a digest of the run's inputs kept in the saved set's metadata (``training/identity.py``).
    """
    data = images if isinstance(images, TrainingImages) else from_image_input(images)
    preflight(config, n_images=len(data), has_empty=empty is not None)
    channels = int(check_unet(model).in_channels)
    conds, cond_of_image = split_conditioning(positive, len(data))
    _check_outputs(save_path, resume, Parallel())
    with torch.inference_mode(False):
        items = encode_images(data, encode, config, channels, cond_of_image)
    return train_on_pairs(model, items, conds, config=config, save_path=save_path, resume=resume,
                          interrupt_check=interrupt_check, progress=progress, empty=empty, run_id=run_id)


def _check_outputs(save_path: str | None, resume: bool, parallel: Parallel) -> None:
    """An existing final file or checkpoint is never overwritten unless resuming."""
    if not save_path or resume:
        return
    ckpt_path = checkpoint_path_for(save_path)
    if parallel.from_rank0(lambda: os.path.exists(save_path) or os.path.exists(ckpt_path)):
        raise SelfCascadeError(f"{os.path.basename(save_path)} (or its checkpoint) already exists; choose another "
                               "save_name, or set resume to continue that run. Nothing was overwritten.")


def _load_resume(save_path: str | None, ckpt_path: str | None, parallel: Parallel):
    """The checkpoint to continue (read by rank 0, sent to all), or None to start at step 0."""
    def read():
        if ckpt_path and os.path.exists(ckpt_path):
            return load_checkpoint(ckpt_path)
        if save_path and os.path.exists(save_path):
            raise SelfCascadeError(f"resume: {os.path.basename(save_path)} exists but its checkpoint "
                                   f"{os.path.basename(ckpt_path)} is gone, so it cannot be continued; choose another "
                                   "save_name. Nothing was overwritten.")
        return None

    return parallel.from_rank0(read)


def train_on_pairs(model, items: Sequence[EncodedImage], conds: list, *, config: TrainConfig,
                   save_path: str | None = None, resume: bool = False,
                   interrupt_check: Callable[[], None] | None = None,
                   progress: Callable[[int, int, float], None] | None = None, empty=None,
                   parallel: Parallel | None = None, run_id: str | None = None) -> TrainResult:
    """Train on encoded pairs: ``items[i].cond`` indexes ``conds`` (a list of CONDITIONINGs); ``empty``
    as in :func:`train_upsamplers`. With ``parallel`` (several processes, torch.distributed set up),
    every process passes the same items and settings, trains its share of each global batch, and
    only rank 0 writes; see parallel.py."""
    import comfy.model_management

    cfg, parallel = config, parallel or Parallel()
    crop, _ = preflight(cfg, n_images=len(items), has_empty=empty is not None, world_size=parallel.world_size)
    unet = check_unet(model)
    channels = int(unet.in_channels)
    ckpt_path = checkpoint_path_for(save_path) if save_path else None
    _check_outputs(save_path, resume, parallel)
    started = time.perf_counter()
    interrupt_check = interrupt_check or comfy.model_management.throw_exception_if_processing_interrupted
    with torch.inference_mode(False), torch.enable_grad(), ExitStack() as stack:
        if cfg.pivot_mode == "generated":
            generate_pivots(model, items, conds, empty, cfg, channels)
        flat, slices, empty_index = _flat_conds(conds, empty)
        uset, optimizer, gen, state = _start(model, unet, cfg, save_path, ckpt_path, resume, parallel)
        hooks = CheckpointHooks(cfg, ckpt_path, uset, optimizer, gen, saved_step=state.step if resume else None,
                                progress=progress, parallel=parallel)
        frozen(stack, model.model)
        training_patch = TrainingPatch(uset, torch.zeros(1, channels, *crop), 1.0, cfg.end_timestep)
        patched = training_patch.install(model)
        gradient_checkpointing(stack, unet, cfg, model.load_device)

        def set_pivot(p: torch.Tensor) -> None:
            training_patch.pivot = p

        sampler = UpsamplerTrainingSampler(
            total_steps=cfg.steps, state=state,
            next_batch=BatchSampler(items, cfg, empty_index, model.model.process_latent_in, gen),
            set_pivot=set_pivot, optimizer=optimizer, trained=uset,
            autocast_dtype=autocast_dtype(cfg, model.load_device), on_step=hooks.on_step,
            check_interrupt=interrupt_check, on_exception=hooks.on_exception, cond_slices=slices, parallel=parallel)
        if state.step < cfg.steps:
            dummy = torch.zeros(1, channels, *crop)
            training_guider(patched, flat).sample(dummy, dummy, sampler, torch.tensor([1.0, 0.0]),
                                                  disable_pbar=True, seed=cfg.seed)
        else:
            state.stopped_reason = "already complete"
    result = TrainResult(upsamplers=_finished_set(uset, state, cfg, run_id), losses=state.losses,
                         steps_done=state.step, seconds=time.perf_counter() - started,
                         stopped_reason=state.stopped_reason, checkpoint_path=ckpt_path,
                         checkpoint_step=hooks.saved_step)
    if state.stopped_reason in ("completed", "already complete") and save_path:
        if hooks.saved_step != state.step:
            hooks.save(state)
            result.checkpoint_step = state.step
        if parallel.is_writer:
            save_upsamplers(save_path, uset)
        result.file_path = save_path
    return result


def _flat_conds(conds: list, empty) -> tuple[list, list[list[int]], int | None]:
    """Every conditioning entry in one list (then ``empty``'s), the slice of each conditioning, and the
    index of ``empty`` among them (None without it)."""
    flat, slices = [], []
    for cond in conds + ([empty] if empty is not None else []):
        slices.append(list(range(len(flat), len(flat) + len(cond))))
        flat.extend(cond)
    return flat, slices, len(conds) if empty is not None else None


def _start(model, unet, cfg: TrainConfig, save_path, ckpt_path, resume: bool, parallel: Parallel):
    """(set, optimiser, data/noise generator, loop state): fresh, or restored from the checkpoint."""
    uset = new_upsamplers(model, unet, cfg)
    optimizer = new_optimizer(uset, cfg)
    gen = torch.Generator().manual_seed(cfg.seed)
    state = LoopState(step=0)
    ckpt = _load_resume(save_path, ckpt_path, parallel) if resume else None
    if ckpt is not None:
        restore(ckpt, cfg, uset, optimizer, gen, ckpt_path)
        state.step, state.losses = ckpt.step, list(ckpt.losses)
        logger.info("Self-Cascade training: resumed %s at step %d.", os.path.basename(ckpt_path), ckpt.step)
    elif resume:
        logger.info("Self-Cascade training: resume requested but no checkpoint %s; starting at step 0.", ckpt_path)
    return uset, optimizer, gen, state


def _finished_set(uset: UpsamplerSet, state: LoopState, cfg: TrainConfig, run_id: str | None) -> UpsamplerSet:
    """The trained set frozen, with what it was trained for and by which run in its metadata."""
    uset.eval().requires_grad_(False)
    uset.info.steps = state.step
    uset.info.extra.update(pivot_mode=cfg.pivot_mode, train_size=[cfg.width, cfg.height],
                           learning_rate=cfg.learning_rate, batch_size=cfg.batch_size)
    if run_id:
        uset.info.extra[RUN_ID_KEY] = run_id
    return uset
