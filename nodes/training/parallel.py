"""How the processes of one training run share the work (``torch.distributed``); one process by default.

Every process draws the same global batch from the same seeded generator and trains a disjoint,
contiguous share of its rows; DistributedDataParallel (on the upsampler set only) averages the
gradients. Each row's loss is weighted ``world_size / batch_size``, so the averaged gradient is
the single-process gradient of the whole batch: any process count gives the same weights up to
float reordering. Only rank 0 reads and writes files; what it reads is broadcast.
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch


class _Forward(torch.nn.Module):
    """Holds the trained module so DistributedDataParallel sees its parameters; ``forward(fn)``
    runs ``fn()`` (one loss computation on ComfyUI's sampling path) between DDP's hooks."""

    def __init__(self, trained: torch.nn.Module):
        super().__init__()
        self.trained = trained

    def forward(self, fn: Callable[[], torch.Tensor]) -> torch.Tensor:
        return fn()


class Parallel:
    """Rank and world size of this process, and the few collectives training needs."""

    def __init__(self, rank: int = 0, world_size: int = 1):
        self.rank, self.world_size = int(rank), int(world_size)

    @classmethod
    def from_process_group(cls) -> Parallel:
        """The initialised default process group (one process when torch.distributed is not set up)."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        """Only rank 0 writes files."""
        return self.rank == 0

    def rows(self, n: int) -> list[int]:
        """This process's contiguous share of ``n`` global rows (shares differ by at most one row)."""
        return list(range(self.rank * n // self.world_size, (self.rank + 1) * n // self.world_size))

    def all_sum(self, value: float) -> float:
        """Sum of ``value`` over all processes (float64, so the order barely matters)."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        t = torch.tensor([value], dtype=torch.float64, device=self._device())
        dist.all_reduce(t)
        return float(t.item())

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is True on any of them."""
        return self.all_sum(1.0 if flag else 0.0) > 0 if self.distributed else bool(flag)

    def from_rank0(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` evaluated on rank 0 only and sent to every process; an exception it raises is
        raised on every process, so they all stop together with rank 0's message."""
        if not self.distributed:
            return fn()
        import torch.distributed as dist

        box: list[Any] = [None]
        if self.rank == 0:
            try:
                box[0] = ("ok", fn())
            except Exception as exc:  # re-raised below on every rank
                box[0] = ("error", exc)
        dist.broadcast_object_list(box, src=0, device=self._device())
        kind, value = box[0]
        if kind == "error":
            raise value
        return value

    def gather(self, value: Any) -> list[Any]:
        """``value`` of every process, in rank order (one element when not distributed)."""
        if not self.distributed:
            return [value]
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out

    def wrap(self, trained: torch.nn.Module) -> torch.nn.Module:
        """A module whose ``forward(fn)`` runs ``fn()``; DistributedDataParallel over ``trained``
        when several processes share the run."""
        module = _Forward(trained)
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module, broadcast_buffers=False)

    def no_sync(self, wrapped: torch.nn.Module) -> AbstractContextManager:
        """Accumulate gradients locally (all but the last backward of a step)."""
        return wrapped.no_sync() if self.distributed else nullcontext()

    def _device(self) -> torch.device:
        import torch.distributed as dist

        if dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
