"""The upsampler training core (paper Algorithm 1), independent of any ComfyUI node.

- ``config``: ``TrainConfig`` (one run's settings).
- ``data``: training images from an IMAGE batch or a folder, captions.
- ``pairs``: encoded training pairs (x0, pivot), conditionings, ``Batch`` and ``BatchSampler``.
- ``loop``: the loop itself, run inside ComfyUI's ``CFGGuider.sample``; loss targets.
- ``setup``: precision, frozen base, gradient checkpointing, the set and its optimiser, resume.
- ``hooks``: file names, progress/log/checkpoint hooks.
- ``parallel``: several processes (``torch.distributed``, DistributedDataParallel).
- ``core``: ``train_upsamplers`` (images + VAE encode) and ``train_on_pairs`` (encoded pairs).

The node ``nodes/train.py`` and ``scripts/train_upsamplers.py`` both call ``core``.
"""
from __future__ import annotations

from .config import PIVOT_MODES, TrainConfig, preflight
from .core import TrainResult, train_on_pairs, train_upsamplers
from .hooks import checkpoint_path_for, save_path_for
from .parallel import Parallel

__all__ = ["PIVOT_MODES", "Parallel", "TrainConfig", "TrainResult", "checkpoint_path_for", "preflight",
           "save_path_for", "train_on_pairs", "train_upsamplers"]
