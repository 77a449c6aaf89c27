"""Smoke test of benchmark/cost.py at tiny sizes: it runs, rows agree in shape, the chain's UNet work is
exactly its denoising steps. (Speed itself is the benchmark's printout, never a timed test.)"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent


def test_cost_benchmark_quick(pack, capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("sc_cost_benchmark", REPO / "benchmark" / "cost.py")
    cost = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, cost)  # dataclasses look their module up
    spec.loader.exec_module(cost)
    threads = torch.get_num_threads()
    try:
        results = {r["name"]: r for r in cost.run(["--quick", "--repeats", "1", "--steps", "10"])}
    finally:
        torch.set_num_threads(threads)
    assert list(results)[:2] == ["direct", "tf_cascade"]
    d, tf = results["direct"], results["tf_cascade"]
    assert d["shape"] == tf["shape"] == (1, 4, 16, 16) and d["finite"] and tf["finite"]
    assert d["calls"] == 10  # euler, cond and uncond batched: one UNet call per step
    from self_cascade.nodes.renoise import cascade_sigmas

    _, sigmas = cascade_sigmas(cost.build_model(cost.SPECS["quick"], "cpu"), 700, 10, "normal")
    assert tf["calls"] == 10 + 2 * (len(sigmas) - 1), "the chain ran UNet calls beyond its denoising steps"
    assert d["ratio"] == 1.0 and tf["ratio"] > 0
    assert "| tf_cascade |" in capsys.readouterr().out
