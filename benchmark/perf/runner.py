"""The suite's machinery: the guarded row runner with its results and budget, the preparation (FLOP counts,
models, measured seconds per call, estimates, plan) and the three sections. Each section runs inside a
function so that its models are released when it returns (the training rows measure their own memory).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path

from . import budget, inference, overhead, profiling, report, training
from . import models as pm

REPO = Path(__file__).resolve().parent.parent.parent
#: a profiled run's cost in timed runs (the profiler's host overhead on launch-bound stages, and its trace parsing)
PROFILE_COST = 2.0
FAMILIES = {"sd15": ("sd15", "quick", "SD1.5"), "sdxl": ("sdxl", "tiny_sdxl", "SDXL")}  # real, smoke, label


def _versions(device: pm.Device) -> dict:
    import torch

    try:
        import comfyui_version
        comfy = comfyui_version.__version__
    except ImportError:
        comfy = "unknown"
    return dict(device_name=device.name(), torch=torch.__version__, cuda=torch.version.cuda, comfyui=comfy,
                python=platform.python_version(), commit=project_commit())


def project_commit(repo: Path = REPO) -> str:
    """This project's own commit: ``SELF_CASCADE_COMMIT`` (set by whoever copies the tree somewhere without
    ``.git``), else ``git describe`` of ``repo`` when ``repo`` is itself the git toplevel (never the id of an
    enclosing repository), else ``unknown``."""
    env = os.environ.get("SELF_CASCADE_COMMIT", "").strip()
    if env:
        return env

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    try:
        top = git("rev-parse", "--show-toplevel")
        if not top or Path(top).resolve() != Path(repo).resolve():
            return "unknown"
        return git("describe", "--always", "--dirty") or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class Suite:
    """Holds the results, the budget and the device; every row goes through :meth:`guarded`."""

    def __init__(self, args: argparse.Namespace, argv: list[str]):
        self.args = args
        self.dev = pm.Device(args.device)
        self.clock = budget.Clock(args.budget_minutes * 60)
        self.items: dict[str, budget.Item] = {}
        self.res: dict = dict(meta={}, families={}, inference={}, overhead={}, training=[], errors=[],
                              budget=dict(items=[]))
        cmd = ["python", "benchmark/gpu_suite.py", *argv]
        self.res["meta"] = dict(
            _versions(self.dev), smoke=args.smoke, command=shlex.join(cmd), budget_s=args.budget_minutes * 60,
            date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), wall_s=0.0,
            dtypes=f"inference: UNet weights {args.dtype or ('bf16' if args.device == 'cuda' else 'fp32')}; "
                   "training: frozen base bf16, full "
                   "fine-tuning fp32 master weights, trainable parameters and AdamW states fp32, bf16 autocast",
            settings=f"{args.steps} steps {args.sampler}/{args.scheduler}, cfg {args.cfg}, K {args.K:g}, seed "
                     f"{args.seed}, batch 1, hires denoise {args.hires_denoise}, Deep Shrink {inference.DEEP_SHRINK}"
                     f", {args.repeats} timed repeat(s) after a warm-up; overhead {args.overhead_steps} steps; "
                     f"training {args.train_steps} steps after 1 warm-up at {args.train_px} px")

    def guarded(self, key: str, record: dict, fn) -> dict:
        """Run ``fn`` for the planned item ``key`` unless dropped/over budget; errors recorded (or raised)."""
        item = self.items[key]
        if item.status != "planned" or not self.clock.allows(item):
            record.update(status=item.status, note=item.note)
            return record
        t0 = time.perf_counter()
        try:
            record.update(fn())
            item.status = "done"
        except Exception as e:  # a row's failure must not cost the other rows (GPU time is scarce)
            if self.args.strict:
                raise
            first = (str(e).strip().splitlines() or [""])[0][:300]
            item.status, item.note = "error", f"{type(e).__name__}: {first}"
            self.res["errors"].append(dict(key=key, error=item.note, traceback=traceback.format_exc()[-4000:]))
        if item.status == "error":  # outside the except block: its frames (and tensors) are gone by now
            self.dev.free()
        item.actual_s = time.perf_counter() - t0
        record.update(status=item.status, note=item.note, seconds=round(item.actual_s, 2))
        print(f"[suite {self.clock.elapsed():6.1f}s] {key}: {item.status} in {item.actual_s:.1f}s "
              f"(est. {item.est_s:.1f}s) {item.note}", file=sys.stderr, flush=True)
        self.write()
        return record

    def write(self) -> None:
        self.res["meta"]["wall_s"] = self.clock.elapsed()
        self.res["budget"]["items"] = [dict(key=i.key, group=i.group, est_s=round(i.est_s, 2), status=i.status,
                                            note=i.note, actual_s=round(getattr(i, "actual_s", 0.0), 2))
                                       for i in self.items.values()]
        out: Path = self.args.out
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(self.res, indent=1, default=str) + "\n")
        (out / "table.md").write_text(report.table(self.res))
        if self.args.profile:
            (out / "profile.txt").write_text(profiling.text(self.res))


def families(args) -> dict[str, dict]:
    out = {}
    for fam in [f.strip() for f in args.families.split(",") if f.strip()]:
        if fam not in FAMILIES:
            raise SystemExit(f"--families: choose from {list(FAMILIES)}")
        real, smoke, label = FAMILIES[fam]
        spec = dict(pm.SPECS[smoke if args.smoke else real])
        spec["base"] = args.base_px or spec["base"]
        out[fam] = dict(spec=spec, label=label, px=[spec["base"] * 2 ** i for i in range(3)])
    return out


def _expected_calls(b: inference.Bench, model) -> dict[str, dict[int, int]]:
    """UNet calls per latent side that each inference row will make (for the estimates only)."""
    from self_cascade.nodes.renoise import cascade_sigmas

    s = [b.size(i) for i in range(3)]
    cas = len(cascade_sigmas(model, b.K, b.steps, b.scheduler)[1]) - 1
    hires = max(1, round(b.steps * b.hires_denoise))
    chain = {s[0]: b.steps, s[1]: cas, s[2]: cas}
    rows = dict(direct={s[2]: b.steps}, hires_fix={s[0]: b.steps, s[1]: hires, s[2]: hires},
                deep_shrink={s[2]: b.steps}, tf_cascade=chain, t_official=chain, t_light=chain)
    return rows | {name: chain for name in inference.OPT_IN}




def prepare(suite: Suite, fams: dict, sections: set[str], methods: list[str], train_side: int) -> dict:
    """FLOP counts (meta device), the models, measured seconds per call (also their warm-up), an estimate of
    every row, and the plan (rows dropped to fit the budget). Returns family -> Bench."""
    args, dev, res = suite.args, suite.dev, suite.res
    benches, est = {}, []
    for fam, fi in fams.items():
        spec = fi["spec"]
        sides = [p // 8 for p in fi["px"]]
        fi["flops"] = {f"{k}x{k}": v for k, v in pm.flops_per_call(spec, sides, batch=2).items()}
        fi["train_flops"] = pm.flops_per_call(spec, [train_side], batch=1)[train_side]
        fi["lora"] = training.matched_lora(spec)
        model = pm.build_model(spec, args.device, seed=args.seed, dtype=args.dtype)
        fi["seconds_per_call"] = inference.time_per_call(model, spec, sides, dev)
        estimator = budget.Estimator.from_calibration(fi["flops"], fi["seconds_per_call"])
        b = inference.Bench(model, pm.conditioning(spec, 1, 1), pm.conditioning(spec, 1, 2), spec["base"], 2,
                            args.steps, args.cfg, args.sampler, args.scheduler, args.K, args.seed,
                            hires_denoise=args.hires_denoise)
        benches[fam] = b
        if "inference" in sections:
            for name, calls in _expected_calls(b, model).items():
                if name not in args.rows:
                    continue
                per = sum(n * estimator.call(fi["flops"][f"{k}x{k}"]) for k, n in calls.items())
                factor = 1.1 if name.startswith("t_") else 1.0
                runs = args.repeats + 2 / args.steps + (PROFILE_COST if args.profile else 0.0)
                setup = inference.OPT_IN.get(name, 0.0) if args.device == "cuda" else 0.0
                est.append(budget.Item(f"inference/{fam}/{name}", f"inference/{fam}", per * factor * runs + setup,
                                       reference=name == "direct"))
        if "overhead" in sections:
            for side in sides[1:]:
                per = estimator.call(fi["flops"][f"{side}x{side}"])
                est.append(budget.Item(f"overhead/{fam}/{side}", f"overhead/{fam}",
                                       3 * 1.2 * per * (1 + args.overhead_steps) + 2 * per * args.overhead_steps))
        if "training" in sections:
            step = 4 * estimator.call(fi["train_flops"])
            build = 2.0 if args.device == "cuda" else 0.1
            for method in methods:
                for gc in (True, False):
                    est.append(budget.Item(f"training/{fam}/{method}/gc_{'on' if gc else 'off'}", f"training/{fam}",
                                           build + step * (1.35 if gc else 1.0) * (1 + args.train_steps),
                                           reference=method == "full"))
        res["families"][fam] = {k: v for k, v in fi.items() if k != "spec"}
    suite.items = {i.key: i for i in est}
    reserve = 10.0 if args.device == "cuda" else 1.0
    budget.plan(est, max(0.0, suite.clock.left() - reserve))
    suite.write()
    return benches


def run_inference(suite: Suite, fam: str, fi: dict, b: inference.Bench) -> None:
    """Section 1 for one model: every row side by side (warm-up, then timed), ratios and ideal ratios."""
    args, dev = suite.args, suite.dev
    meter = pm.UnetMeter(b.model.model.diffusion_model, dev, timed=not dev.cuda)
    rows = suite.res["inference"].setdefault(fam, [])

    def one(name: str) -> dict:
        inference.ROWS[name][0](b.with_steps(2))  # warm-up
        if not args.profile:
            return inference.median_of(lambda: inference.run_row(b, name, meter, dev), args.repeats)
        runs = []
        for _ in range(args.repeats):
            with profiling.sampling_calls(meter, dev) as calls:
                runs.append(dict(inference.run_row(b, name, meter, dev), sampling_calls=calls))
        r = inference.median_run(runs)
        calls = r.pop("sampling_calls")
        try:  # the timed figures stand even if the profiler fails
            p = profiling.profiled_run(lambda: inference.ROWS[name][0](b), dev)
            r["profile"] = profiling.row_profile(r["wall_s"], calls, p)
        except Exception as e:
            if args.strict:
                raise
            r["profile_error"] = f"{type(e).__name__}: {str(e)[:300]}"
        return r

    try:
        for name in args.rows:
            rows.append(suite.guarded(f"inference/{fam}/{name}", dict(name=name), lambda n=name: one(n)))
    finally:
        meter.close()
    inference.summarise([r for r in rows if r["status"] == "done"])
    ref = next((r for r in rows if r["name"] == "direct" and r["status"] == "done"), None)
    # per batch row (the costs were taken at batch 2, cond + uncond): exact for FLOPs even if the sampler
    # split cond and uncond into separate calls
    flops = {k: v / 2 for k, v in fi["flops"].items()}
    secs = {k: v / 2 for k, v in fi["seconds_per_call"].items()}
    for r in rows:
        if ref and r["status"] == "done" and r["name"] != "deep_shrink":  # its steps are not plain steps
            r["ideal_flops"] = inference.ideal_ratio(r["samples_by_side"], ref["samples_by_side"], flops)
            r["ideal_time"] = inference.ideal_ratio(r["samples_by_side"], ref["samples_by_side"], secs)
    suite.write()


def run_overhead(suite: Suite, fam: str, fi: dict, b: inference.Bench) -> None:
    """Section 2 for one model: plain / official / light per step at each cascade stage's size."""
    args = suite.args
    rows = suite.res["overhead"].setdefault(fam, [])
    for side in [p // 8 for p in fi["px"][1:]]:
        def over(side=side) -> dict:
            return dict(rows=overhead.overhead_rows(b.model, fi["spec"], side, b.upsamplers, args.overhead_steps,
                                                    args.cfg, b.positive, b.negative, suite.dev))
        rec = suite.guarded(f"overhead/{fam}/{side}", dict(side=side), over)
        rows.extend([dict(r, status=rec["status"]) for r in rec.pop("rows", [])] or [rec])
    suite.write()


def run_training(suite: Suite, fam: str, fi: dict, methods: list[str], train_side: int) -> None:
    """Section 3 for one model: each method with checkpointing on and off, each row with its own model."""
    args, dev = suite.args, suite.dev
    fam_rows = []
    for method in methods:
        for gc in (True, False):
            key = f"training/{fam}/{method}/gc_{'on' if gc else 'off'}"
            rec = dict(family=fam, method=method, checkpointing=gc, side=train_side,
                       rank=fi["lora"]["lora_rank"] if method == "lora" else None)
            fam_rows.append(suite.guarded(key, rec, lambda m=method, g=gc: training.train_row(
                fi["spec"], m, train_side, g, args.train_steps, 1, dev, fi["lora"]["lora_rank"])))
    for r in fam_rows:
        full = next((x for x in fam_rows if x["method"] == "full" and x["checkpointing"] == r["checkpointing"]
                     and x["status"] == "done"), None)
        if full and r["status"] == "done":
            r["speedup_vs_full"] = full["s_per_step"] / r["s_per_step"]
            r["memory_vs_full"] = full["peak_mib"] / r["peak_mib"] if dev.cuda else float("nan")
    suite.res["training"].extend(fam_rows)
    suite.write()


def run_models(suite: Suite, fams: dict, sections: set[str], methods: list[str], train_side: int) -> None:
    """Sections 1 and 2 with the prepared models, then (the models released) section 3."""
    benches = prepare(suite, fams, sections, methods, train_side)
    for fam, fi in fams.items():
        b = benches[fam]
        b.upsamplers = inference.make_upsamplers(b.model)
        if "inference" in sections:
            run_inference(suite, fam, fi, b)
        if "overhead" in sections:
            run_overhead(suite, fam, fi, b)
        del b
    benches.clear()
    suite.dev.free()
