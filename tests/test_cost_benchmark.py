"""benchmark/cost.py (a thin command line over the suite's inference rows) at tiny sizes, and the suite's pure
parts: the budget planner and the ideal ratio. Rows agree in shape; each row's UNet work is exactly its
denoising steps; ratios are the recorded times' ratios. (Speed itself is the benchmark's printout, never a
timed test.)"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


def _load(name: str, path: Path, monkeypatch):
    """The benchmark script ``path`` as a module of the pack (``self_cascade.benchmark.<stem>``)."""
    return importlib.import_module(f"self_cascade.benchmark.{path.stem}")


def test_cost_benchmark_quick(pack, capsys, monkeypatch):
    cost = _load("sc_cost_benchmark", REPO / "benchmark" / "cost.py", monkeypatch)
    threads = torch.get_num_threads()
    try:
        results = {r["name"]: r for r in cost.run(["--quick", "--repeats", "1", "--steps", "10"])}
    finally:
        torch.set_num_threads(threads)
    assert list(results) == ["direct", "tf_cascade", "t_official", "t_light"]
    d, tf = results["direct"], results["tf_cascade"]
    for r in results.values():
        assert r["shape"] == [1, 4, 16, 16] and r["finite"]
    # euler, cond and uncond batched: one UNet call per executed step, all at the target for direct
    assert d["calls"] == 10 and d["calls_by_side"] == {"16x16": 10}
    from self_cascade.nodes.renoise import cascade_sigmas

    _, sigmas = cascade_sigmas(cost.build_model(cost.SPECS["quick"], "cpu"), 700, 10, "normal")
    executed = len(sigmas) - 1
    assert 0 < executed < 10  # K=700 runs part of the schedule
    assert tf["calls_by_side"] == {"4x4": 10, "8x8": executed, "16x16": executed}, \
        "the chain ran UNet calls beyond its denoising steps"
    assert tf["calls"] == 10 + 2 * executed
    # the tuned rows: the pivot pass runs UNet blocks, never a second UNet forward
    assert results["t_official"]["calls_by_side"] == results["t_light"]["calls_by_side"] == tf["calls_by_side"]
    for r in results.values():  # ratios are the recorded times' ratios; the UNet time is part of the wall time
        assert r["ratio"] == pytest.approx(r["wall_s"] / d["wall_s"])
        assert 0 < r["unet_s"] < r["wall_s"] and r["overhead_s"] == pytest.approx(r["wall_s"] - r["unet_s"])
        assert math.isnan(r["peak_mib"]) and math.isnan(r["mem_ratio"])  # no CUDA here: not measured
    assert "| t_light |" in capsys.readouterr().out


@pytest.fixture
def perf_budget(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmark"))
    from perf import budget

    return budget


def test_budget_drops_most_expensive_rows_first_and_keeps_references(perf_budget):
    b = perf_budget
    items = [b.Item("a/direct", "a", 10, reference=True), b.Item("a/x", "a", 30), b.Item("a/y", "a", 5),
             b.Item("c/direct", "c", 50, reference=True), b.Item("c/z", "c", 20)]
    dropped = b.plan(items, 70)  # total 115: drop a/x (30) then c/z (20) -> 65
    assert [i.key for i in dropped] == ["a/x", "c/z"]
    assert [i.status for i in items] == ["planned", "dropped", "planned", "planned", "dropped"]
    assert "most expensive first" in items[1].note
    items = [b.Item("a/direct", "a", 10, reference=True), b.Item("a/y", "a", 5),
             b.Item("c/direct", "c", 50, reference=True), b.Item("c/z", "c", 20)]
    dropped = b.plan(items, 12)  # non-references out first (20, 5), still 60 > 12: group c, then fits? 10 <= 12
    assert [i.key for i in dropped] == ["c/z", "a/y", "c/direct"]
    assert items[0].status == "planned" and "whole group c" in items[2].note
    assert b.plan([b.Item("k", "g", 1.0)], 5) == []


def test_budget_clock_skips_a_row_that_would_overrun(perf_budget):
    clock = perf_budget.Clock(budget_s=100.0)
    small, big = perf_budget.Item("s", "g", 1.0), perf_budget.Item("b", "g", 1e6)
    assert clock.allows(small) and small.status == "planned"
    assert not clock.allows(big) and big.status == "skipped" and "left" in big.note


def test_ideal_ratio_and_estimator(perf_budget, monkeypatch):
    from perf import inference

    cost = {"4x4": 1.0, "8x8": 4.0, "16x16": 16.0}
    direct = {"16x16": 10}
    chain = {"4x4": 10, "8x8": 7, "16x16": 7}
    assert inference.ideal_ratio(chain, direct, cost) == pytest.approx((10 + 28 + 112) / 160)
    assert inference.ideal_ratio(direct, direct, cost) == 1.0
    est = perf_budget.Estimator.from_calibration({"a": 1e9, "b": 1e12}, {"a": 0.01, "b": 2.0})
    assert est.call(1e12) == pytest.approx(2.0) and est.call(1e3) == pytest.approx(0.01)  # floor
