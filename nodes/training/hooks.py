"""File names of a training run and the loop's step/exception hooks (progress, log, checkpoints)."""
from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable

import torch

from ...upsampler.checkpoint import CKPT_SUFFIX, Checkpoint, check_save_name, save_checkpoint
from ...upsampler.modules import UpsamplerSet
from ..common import SelfCascadeError
from .config import TrainConfig
from .loop import LoopState
from .parallel import Parallel

logger = logging.getLogger(__name__)


def checkpoint_path_for(save_path: str) -> str:
    """``<name>.safetensors`` -> ``<name>.ckpt.safetensors`` next to it."""
    base = save_path[: -len(".safetensors")] if save_path.endswith(".safetensors") else save_path
    return base + CKPT_SUFFIX


def save_path_for(save_name: str, folder: str) -> str:
    """The final file for a user-given save name (no separators, no '..')."""
    try:
        stem = check_save_name(save_name)
    except ValueError as e:
        raise SelfCascadeError(str(e)) from None
    return os.path.join(folder, stem + ".safetensors")


class CheckpointHooks:
    """``on_step`` (progress, log, periodic checkpoint) and ``on_exception`` (checkpoint of the last
    completed step, e.g. on cancel) for the loop. Only the writing process (rank 0) writes; a
    checkpoint holds the weights, the AdamW state, the RNG state after the step and the losses."""

    def __init__(self, cfg: TrainConfig, ckpt_path: str | None, uset: UpsamplerSet, optimizer: torch.optim.Optimizer,
                 gen: torch.Generator, *, saved_step: int | None,
                 progress: Callable[[int, int, float], None] | None = None, parallel: Parallel | None = None):
        self.cfg, self.uset, self.optimizer, self.gen = cfg, uset, optimizer, gen
        self.parallel = parallel or Parallel()
        self.ckpt_path = ckpt_path
        self.progress = progress
        self.saved_step = saved_step  # the step of the checkpoint on disk (None: none written by this run)
        self.rng = gen.get_state()  # the generator state after the last completed step

    def save(self, st: LoopState) -> None:
        params = list(self.uset.parameters())
        if not self.ckpt_path or not all(bool(torch.isfinite(p).all()) for p in params):
            return
        if self.parallel.is_writer:
            save_checkpoint(self.ckpt_path, Checkpoint(
                step=st.step, weights=dict(self.uset.state_dict()), optimizer=self.optimizer.state_dict(),
                rng={"generator": self.rng}, losses=st.losses,
                config={"train": dataclasses.asdict(self.cfg), "info": self.uset.info.to_json()}))
        self.saved_step = st.step

    def on_step(self, st: LoopState) -> None:
        self.rng = self.gen.get_state()
        if self.progress is not None:
            self.progress(st.step, self.cfg.steps, st.losses[-1])
        if self.parallel.is_writer and (st.step % max(1, self.cfg.log_every) == 0 or st.step == self.cfg.steps):
            logger.info("Self-Cascade training: step %d/%d loss %.5f", st.step, self.cfg.steps, st.losses[-1])
        if self.cfg.checkpoint_every and st.step % self.cfg.checkpoint_every == 0:
            self.save(st)

    def on_exception(self, st: LoopState, exc: BaseException) -> None:
        if self.ckpt_path and st.step != self.saved_step:
            self.save(st)
            if self.parallel.is_writer:
                logger.warning("Self-Cascade training stopped at step %d (%s); resumable checkpoint: %s",
                               st.step, type(exc).__name__, self.ckpt_path)
