"""benchmark/gpu_suite.py --smoke: every row's code path on the CPU at tiny sizes, so the one GPU run cannot fail
on a typo. Checks what can be checked without a GPU: each row ran (none dropped, no error), the UNet call
counts equal the executed steps, ratios are computed from the recorded figures, the LoRA matches the
official set's size, and a failing row raises under --smoke (and is recorded, the suite going on, without
strictness). Speed figures themselves are never asserted (they are the benchmark's output)."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def suite(pack):
    yield importlib.import_module("self_cascade.benchmark.gpu_suite")


def _main(suite, argv):
    threads = torch.get_num_threads()
    try:
        return suite.main(argv)
    finally:
        torch.set_num_threads(threads)


def test_smoke_runs_every_row(suite, tmp_path):
    res = _main(suite, ["--smoke", "--out", str(tmp_path)])
    steps = 4
    assert res["errors"] == []
    statuses = {i["key"]: i["status"] for i in res["budget"]["items"]}
    assert len(statuses) == 2 * (6 + 2 + 8) and set(statuses.values()) == {"done"}, statuses
    from self_cascade.nodes.renoise import cascade_sigmas

    for fam in ("sd15", "sdxl"):
        fi = res["families"][fam]
        rows = {r["name"]: r for r in res["inference"][fam]}
        assert list(rows) == ["direct", "hires_fix", "deep_shrink", "tf_cascade", "t_official", "t_light"]
        for r in rows.values():
            assert r["status"] == "done" and r["finite"] and r["shape"] == [1, 4, 16, 16]
            assert r["ratio"] == pytest.approx(r["wall_s"] / rows["direct"]["wall_s"])
        model = suite.runner.pm.build_model(suite.runner.pm.SPECS["quick"], "cpu")
        executed = len(cascade_sigmas(model, 700, steps, "normal")[1]) - 1
        assert rows["direct"]["calls_by_side"] == rows["deep_shrink"]["calls_by_side"] == {"16x16": steps}
        assert rows["hires_fix"]["calls_by_side"] == {"4x4": steps, "8x8": steps // 2, "16x16": steps // 2}
        for name in ("tf_cascade", "t_official", "t_light"):
            assert rows[name]["calls_by_side"] == {"4x4": steps, "8x8": executed, "16x16": executed}
        for r in rows.values():  # cond and uncond in one batch: two batch rows per call
            assert r["samples_by_side"] == {k: 2 * n for k, n in r["calls_by_side"].items()}
        # the ideal ratio is the executed calls weighted by the FLOP count per call at each size
        flops = fi["flops"]
        want = (steps * flops["4x4"] + executed * (flops["8x8"] + flops["16x16"])) / (steps * flops["16x16"])
        assert rows["tf_cascade"]["ideal_flops"] == pytest.approx(want)
        assert flops["4x4"] < flops["8x8"] < flops["16x16"]
        assert "ideal_flops" not in rows["deep_shrink"]  # its steps are not plain UNet steps: no ideal given
        over = res["overhead"][fam]
        assert [(r["side"], r["name"]) for r in over] == [(8, "plain"), (8, "official"), (8, "light"),
                                                          (16, "plain"), (16, "official"), (16, "light")]
        for r in over:
            assert r["s_per_step"] > 0 and r["status"] == "done"
            if r["name"] != "plain":
                assert r["pivot_s"] > 0 and r["pivot_share"] == pytest.approx(
                    r["pivot_s"] / next(x for x in over if x["side"] == r["side"] and x["name"] == "plain")["s_per_step"])
        train = [r for r in res["training"] if r["family"] == fam]
        assert [(r["method"], r["checkpointing"]) for r in train] == [
            (m, gc) for m in ("official", "light", "lora", "full") for gc in (True, False)]
        by = {(r["method"], r["checkpointing"]): r for r in train}
        for r in train:
            assert r["finite"] and r["s_per_step"] > 0 and r["side"] == 8
            full = by[("full", r["checkpointing"])]
            assert r["speedup_vs_full"] == pytest.approx(full["s_per_step"] / r["s_per_step"])
            assert math.isnan(r["memory_vs_full"])  # no CUDA: memory is not measured, never estimated
        assert by[("full", True)]["trainable"] == by[("full", True)]["unet_params"]
        assert by[("official", True)]["trainable"] == fi["lora"]["official"]
        assert by[("light", True)]["trainable"] == fi["lora"]["light"]
        assert by[("lora", True)]["trainable"] == fi["lora"]["lora_params"]
        assert abs(fi["lora"]["lora_params"] - fi["lora"]["official"]) < fi["lora"]["official"] / fi["lora"]["lora_rank"]
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["meta"]["smoke"] is True and written["meta"]["command"].endswith("--smoke --out " + str(tmp_path))
    table = (tmp_path / "table.md").read_text()
    assert table.startswith("> **SMOKE RUN**") and "every planned row ran" in table
    for name in ("hires_fix", "deep_shrink", "t_official", "lora r", "pivot share", "Goals"):
        assert name in table


def test_row_error_raises_under_smoke_and_is_recorded_otherwise(suite, tmp_path, monkeypatch):
    def boom(b):
        raise RuntimeError("planted failure")

    monkeypatch.setitem(suite.inference.ROWS, "hires_fix", (boom, "planted"))
    argv = ["--smoke", "--families", "sd15", "--sections", "inference", "--rows", "direct,hires_fix,tf_cascade",
            "--out", str(tmp_path)]
    with pytest.raises(RuntimeError, match="planted failure"):
        _main(suite, argv)
    res = _main(suite, argv + ["--keep-going"])
    status = {r["name"]: r["status"] for r in res["inference"]["sd15"]}
    assert status.pop("hires_fix") == "error" and set(status.values()) == {"done"}
    assert res["errors"][0]["key"] == "inference/sd15/hires_fix" and "planted failure" in res["errors"][0]["error"]
    assert "planted failure" in (tmp_path / "table.md").read_text()


def test_budget_guard_drops_rows_and_says_so(suite, tmp_path):
    res = _main(suite, ["--smoke", "--families", "sd15", "--sections", "inference", "--rows", "direct,tf_cascade",
                        "--budget-minutes", "0.01", "--out", str(tmp_path)])
    items = {i["key"]: i for i in res["budget"]["items"]}
    assert items and all(i["status"] in ("dropped", "skipped") for i in items.values())
    assert all(r["status"] in ("dropped", "skipped") and "wall_s" not in r for r in res["inference"]["sd15"])
    assert "not run, most expensive first" in (tmp_path / "table.md").read_text()


def test_help_documents_each_row(suite, capsys):
    with pytest.raises(SystemExit):
        suite.parse_args(["--help"])
    text = capsys.readouterr().out
    for name in list(suite.inference.ROWS) + list(suite.training.METHODS) + ["--smoke", "--budget-minutes"]:
        assert name in text


def test_commit_is_this_projects_own_or_unknown(suite, tmp_path, monkeypatch):
    """The tree copied without .git inside another repository must not record that repository's id."""
    import subprocess

    monkeypatch.delenv("SELF_CASCADE_COMMIT", raising=False)
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "f").write_text("x")
    subprocess.run([*git, "-C", str(tmp_path), "add", "f"], check=True)
    subprocess.run([*git, "-C", str(tmp_path), "commit", "-qm", "c"], check=True)
    outer = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "--short", "HEAD"], capture_output=True,
                           text=True, check=True).stdout.strip()
    copy = tmp_path / "pack"  # a copy of the project without its .git, inside the other repository
    copy.mkdir()
    assert suite.runner.project_commit(copy) == "unknown"
    assert suite.runner.project_commit(tmp_path).startswith(outer)  # its own toplevel: described
    assert suite.runner.project_commit(tmp_path / "missing") == "unknown"
    monkeypatch.setenv("SELF_CASCADE_COMMIT", "79ec1e2")
    assert suite.runner.project_commit(copy) == "79ec1e2"


def test_profile_records_busy_idle_and_each_sampling_call(suite, tmp_path):
    """--profile on the CPU: no device activity (busy 0, idle 100%), and one record per sampling call whose
    UNet calls are the row's own per latent side; the profiler really ran (host operators recorded)."""
    res = _main(suite, ["--smoke", "--families", "sd15", "--sections", "inference", "--rows", "direct,tf_cascade,t_light",
                        "--profile", "--out", str(tmp_path)])
    rows = {r["name"]: r for r in res["inference"]["sd15"]}
    for name, r in rows.items():
        p = r["profile"]
        assert p["device_busy_s"] == 0.0 and p["idle_share"] == 1.0 and p["wall_s"] == r["wall_s"]
        assert p["host_ops"] and p["profiled_wall_s"] > 0 and p["device_kernels"] == []
        by_latent = {f"{c['latent'][0]}x{c['latent'][1]}": c["unet_calls"] for c in p["sampling_calls"]}
        assert by_latent == r["calls_by_side"], (name, by_latent)
        assert sum(c["wall_s"] for c in p["sampling_calls"]) <= r["wall_s"]
        for c in p["sampling_calls"]:
            assert c["ms_per_call"] == pytest.approx(1000 * c["wall_s"] / c["unet_calls"])
    assert [c["fn"] for c in rows["direct"]["profile"]["sampling_calls"]] == ["sample"]
    assert [c["fn"] for c in rows["tf_cascade"]["profile"]["sampling_calls"]] == ["sample", "sample_custom", "sample_custom"]
    text = (tmp_path / "profile.txt").read_text()
    assert "=== sd15 tf_cascade" in text and "sample_custom latent (16, 16)" in text
    assert "vs tf_cascade at 16x16" in text.split("=== sd15 t_light")[1] and "vs tf_cascade" not in text.split("=== sd15 t_light")[0]
    assert "| tf_cascade |" in (tmp_path / "table.md").read_text().split("Profile (`--profile`")[1]


def test_union_of_device_intervals_counts_overlaps_once(suite):
    union = suite.runner.profiling.union_seconds
    assert union([]) == 0.0
    assert union([(0, 2), (1, 3), (5, 6), (5.5, 5.7)]) == 4.0
    assert union([(4, 5), (0, 1)]) == 2.0


def test_profiler_failure_keeps_the_timed_row(suite, tmp_path, monkeypatch):
    def broken(fn, device, top=8):
        raise RuntimeError("planted profiler failure")

    monkeypatch.setattr(suite.runner.profiling, "profiled_run", broken)
    res = _main(suite, ["--smoke", "--keep-going", "--families", "sd15", "--sections", "inference", "--rows", "direct",
                        "--profile", "--out", str(tmp_path)])
    (row,) = res["inference"]["sd15"]
    assert row["status"] == "done" and row["wall_s"] > 0 and "profile" not in row
    assert "planted profiler failure" in row["profile_error"]


def test_opt_in_rows_stay_out_of_the_default_and_graph_replay_falls_back_to_eager_on_the_cpu(suite, tmp_path):
    """The experimental rows run only when named; on the CPU the CUDA-graph wrapper is installed and called at
    every UNet call, and falls back to the eager forward (same latent, bit for bit)."""
    import comfy.sample
    from self_cascade.benchmark.perf import graphs, inference

    assert set(inference.OPT_IN) <= set(inference.ROWS)
    assert not set(inference.OPT_IN) & set(suite.parse_args([]).rows.split(","))
    pm = suite.runner.pm
    spec = pm.SPECS["quick"]
    model = pm.build_model(spec, "cpu")
    wrapped, fwd = graphs.graphed(model)
    pos, neg = pm.conditioning(spec, 1, 1), pm.conditioning(spec, 1, 2)
    empty = torch.zeros(1, 4, 8, 8)
    noise = comfy.sample.prepare_noise(empty, 0)
    outs = [comfy.sample.sample(m, noise, 3, 5.0, "euler", "normal", pos, neg, empty, disable_pbar=True, seed=0)
            for m in (model, wrapped)]
    assert torch.equal(outs[0], outs[1])
    assert fwd.eager == 3 and fwd.replays == 0 and not fwd.graphs
    res = _main(suite, ["--smoke", "--families", "sd15", "--sections", "inference", "--rows", "direct,tf_cudagraph",
                        "--out", str(tmp_path)])
    (_, row) = res["inference"]["sd15"]
    assert row["name"] == "tf_cudagraph" and row["status"] == "done" and row["finite"]


def test_quoted_gpu_figures_are_the_committed_run_s():
    """README and docs/PERFORMANCE.md quote the committed H200 run: every time ratio they quote is the one
    in benchmark/results/gpu/results.json (rounded as quoted), with the device and the corrected commit."""
    res = json.loads((REPO / "benchmark" / "results" / "gpu" / "results.json").read_text())
    assert res["meta"]["commit"] == "79ec1e2" and res["meta"]["device_name"] == "NVIDIA H200"
    docs = {p: (REPO / p).read_text() for p in ("README.md", "docs/PERFORMANCE.md")}
    for fam, rows in res["inference"].items():
        for r in rows:
            if r["name"] in ("tf_cascade", "t_official", "t_light", "hires_fix", "deep_shrink"):
                for path, text in docs.items():
                    assert f"{r['ratio']:.3f}x" in text, (path, fam, r["name"])
    for text in docs.values():
        assert "NVIDIA H200" in text and "79ec1e2" in text and "not yet run on a GPU" not in text
