"""The time budget: estimate every row before running, drop the most expensive rows first until the plan
fits, and skip at run time a row that would overrun what is left. Estimates plan; they are never reported
as measurements (the table lists them only beside the rows they dropped).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Item:
    """One planned row. ``group``: rows that share a reference (the reference is dropped only with its group)."""
    key: str
    group: str
    est_s: float
    reference: bool = False
    status: str = "planned"  # planned | dropped | skipped | done | error
    note: str = ""


def plan(items: list[Item], budget_s: float) -> list[Item]:
    """Mark rows dropped (in place; returns the dropped ones) until the estimated total fits ``budget_s``.

    First the non-reference rows, most expensive first; if that is not enough, whole groups (reference
    and its rows), most expensive group first.
    """
    dropped: list[Item] = []

    def total() -> float:
        return sum(i.est_s for i in items if i.status == "planned")

    for it in sorted((i for i in items if not i.reference), key=lambda i: -i.est_s):
        if total() <= budget_s:
            break
        it.status, it.note = "dropped", f"budget: est. {it.est_s:.0f}s, most expensive first"
        dropped.append(it)
    groups: dict[str, list[Item]] = {}
    for i in items:
        groups.setdefault(i.group, []).append(i)
    for name, rows in sorted(groups.items(), key=lambda kv: -sum(i.est_s for i in kv[1] if i.status == "planned")):
        if total() <= budget_s:
            break
        for it in rows:
            if it.status == "planned":
                it.status, it.note = "dropped", f"budget: whole group {name} (est. {it.est_s:.0f}s)"
                dropped.append(it)
    return dropped


@dataclass
class Clock:
    """Wall time since the suite started, against the budget."""
    budget_s: float
    t0: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def left(self) -> float:
        return self.budget_s - self.elapsed()

    def allows(self, item: Item) -> bool:
        """False (and the item marked skipped) when the row's estimate exceeds the time left."""
        if item.est_s <= self.left():
            return True
        item.status = "skipped"
        item.note = f"budget at run time: est. {item.est_s:.0f}s > {max(0.0, self.left()):.0f}s left"
        return False


@dataclass
class Estimator:
    """Seconds per UNet forward from FLOPs: a measured throughput (FLOP/s at the largest calibrated size)
    with a floor (the measured time of the smallest size: launch overheads)."""
    flop_per_s: float
    floor_s: float

    def call(self, flops: float) -> float:
        return max(flops / self.flop_per_s, self.floor_s)

    @classmethod
    def from_calibration(cls, flops: dict[str, float], seconds: dict[str, float]) -> Estimator:
        big = max(flops, key=flops.get)
        small = min(flops, key=flops.get)
        return cls(flops[big] / max(seconds[big], 1e-9), seconds[small])
