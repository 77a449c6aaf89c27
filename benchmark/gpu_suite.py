"""Performance suite at real Stable Diffusion sizes: one command, one table (a benchmark, not a test).

    python benchmark/gpu_suite.py              # CUDA, SD1.5 512->1024->2048 and SDXL 1024->2048->4096,
                                               # writes benchmark/results/gpu/{table.md,results.json}
    python benchmark/gpu_suite.py --smoke      # every code path on the CPU at tiny sizes (the test suite runs it)

Random weights in real SD1.5 / SDXL UNets built from ComfyUI's own model configs (cost does not depend
on the weights; nothing is downloaded). Latents only (no VAE, no text encoder). Sections and rows:

1. Inference, side by side, same seed / sampler / scheduler / cfg / steps (per model):
{inference}
   Columns: wall time (CUDA-synchronised), its ratio to direct, UNet calls per latent size, the ideal
   ratio from the executed calls and the cost per call at each size (FLOP count on the meta device, and
   the measured seconds per call), peak CUDA memory (reset per row) and its ratio to direct.
2. Upsampler overhead per sampling step at each cascade stage's size (per model): plain, official,
   light (patch on at every step); the pivot pass timed alone and its share of a plain step.
3. Training step at 1024 px (SD1.5 and SDXL), bf16 autocast, gradient checkpointing on and off:
{training}
   Columns: trainable parameters, seconds per step, speed-up and memory ratio vs full fine-tuning.

Robustness: a warm-up run before each timed row; each row runs in its own try/except that records the
error in the table and goes on (``--smoke`` and ``--strict`` raise instead); results are rewritten after
every row. ``--budget-minutes``: every row is estimated first (FLOP count x measured throughput); the most
expensive rows are dropped until the plan fits, and a row that would overrun the time left is skipped;
the table lists both.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cost  # noqa: E402  (benchmark/cost.py: the host set-up)
from perf import budget, inference, overhead, report, training  # noqa: E402
from perf import models as pm  # noqa: E402

REPO = HERE.parent
FAMILIES = {"sd15": ("sd15", "quick", "SD1.5"), "sdxl": ("sdxl", "tiny_sdxl", "SDXL")}  # real, smoke, label
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
OUT_REAL = REPO / "benchmark" / "results" / "gpu"
OUT_SMOKE = REPO / "benchmark" / "results" / "tmp" / "gpu_smoke"


def _help_lists() -> dict:
    inf = "\n".join(f"   - {name}: {doc}" for name, (_, doc) in inference.ROWS.items())
    tr = "\n".join(f"   - {name}: {doc}" for name, doc in training.METHOD_DOCS.items())
    return dict(inference=inf, training=tr)


def parse_args(argv=None) -> argparse.Namespace:
    text = __doc__
    for key, value in _help_lists().items():
        text = text.replace("{" + key + "}", value)
    p = argparse.ArgumentParser(description=text,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true",
                   help="CPU, tiny models, 4 steps: runs every row's code path; any row error is raised")
    p.add_argument("--strict", action="store_true", help="raise on the first row error (default: record it, go on)")
    p.add_argument("--keep-going", action="store_true", help="with --smoke: record row errors instead of raising")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="(--smoke forces cpu)")
    p.add_argument("--families", default="sd15,sdxl", help="comma-separated: sd15, sdxl")
    p.add_argument("--sections", default="inference,overhead,training",
                   help="comma-separated: inference (1), overhead (2), training (3)")
    p.add_argument("--steps", type=int, default=None, help="whole-schedule length of every sampling call "
                   "(default 20; 4 with --smoke)")
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--sampler", default="euler")
    p.add_argument("--scheduler", default="normal")
    p.add_argument("--K", type=float, default=700.0, help="Self-Cascade's renoise timestep (of 1000)")
    p.add_argument("--hires-denoise", type=float, default=0.5, help="hires fix: executed part of the schedule")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=1, help="timed repeats per inference row (median)")
    p.add_argument("--overhead-steps", type=int, default=None, help="timed steps per overhead row (default 3; 1 smoke)")
    p.add_argument("--train-steps", type=int, default=None, help="timed optimiser steps per training row "
                   "(default 3; 1 smoke), after one warm-up step")
    p.add_argument("--train-px", type=int, default=1024, help="training resolution in pixels (smoke: 64)")
    p.add_argument("--methods", default=",".join(training.METHODS), help="comma-separated training methods")
    p.add_argument("--base-px", type=int, default=None,
                   help="override both models' base size (a CPU check of the real-size layouts at small sizes)")
    p.add_argument("--budget-minutes", type=float, default=7.0,
                   help="time budget of the whole suite (model builds included); rows dropped/skipped to fit")
    p.add_argument("--threads", type=int, default=1, help="CPU torch threads (smoke / --device cpu)")
    p.add_argument("--dtype", choices=list(DTYPES), default=None,
                   help="inference weights (default bf16 on CUDA, fp32 on the CPU)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"output folder (default {OUT_REAL.relative_to(REPO)}; smoke: {OUT_SMOKE.relative_to(REPO)})")
    a = p.parse_args(argv)
    if a.smoke:
        a.device, a.strict = "cpu", not a.keep_going
    a.steps = a.steps or (4 if a.smoke else 20)
    a.overhead_steps = a.overhead_steps or (1 if a.smoke else 3)
    a.train_steps = a.train_steps or (1 if a.smoke else 3)
    if a.smoke:
        a.train_px = 64
    a.out = a.out or (OUT_SMOKE if a.smoke else OUT_REAL)
    return a


def _versions(device: pm.Device) -> dict:
    import torch

    try:
        import comfyui_version
        comfy = comfyui_version.__version__
    except ImportError:
        comfy = "unknown"
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return dict(device_name=device.name(), torch=torch.__version__, cuda=torch.version.cuda, comfyui=comfy,
                python=platform.python_version(), commit=commit)


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
            try:
                self.dev.free()
            except Exception:  # noqa: BLE001 - freeing after an error is best effort
                pass
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


def _families(args) -> dict[str, dict]:
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
    return dict(direct={s[2]: b.steps}, hires_fix={s[0]: b.steps, s[1]: hires, s[2]: hires},
                deep_shrink={s[2]: b.steps}, tf_cascade=chain, t_official=chain, t_light=chain)


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    cost.setup_host(args.device, args.threads)
    suite = Suite(args, argv)
    dev, res = suite.dev, suite.res
    sections = {s.strip() for s in args.sections.split(",")}
    fams = _families(args)
    train_side = args.train_px // 8
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if any(m not in training.METHODS for m in methods):
        raise SystemExit(f"--methods: choose from {list(training.METHODS)}")

    # 0. FLOP counts (meta device), models, measured seconds per call (also the warm-up), estimates, plan
    built, benches, est = {}, {}, []
    for fam, fi in fams.items():
        spec = fi["spec"]
        sides = [p // 8 for p in fi["px"]]
        fi["flops"] = {f"{k}x{k}": v for k, v in pm.flops_per_call(spec, sides, batch=2).items()}
        fi["train_flops"] = pm.flops_per_call(spec, [train_side], batch=1)[train_side]
        fi["lora"] = training.matched_lora(spec)
        model = pm.build_model(spec, args.device, seed=args.seed, dtype=DTYPES[args.dtype] if args.dtype else None)
        fi["seconds_per_call"] = inference.time_per_call(model, spec, sides, dev)
        estimator = budget.Estimator.from_calibration(fi["flops"], fi["seconds_per_call"])
        b = inference.Bench(model, pm.conditioning(spec, 1, 1), pm.conditioning(spec, 1, 2), spec["base"], 2,
                            args.steps, args.cfg, args.sampler, args.scheduler, args.K, args.seed,
                            hires_denoise=args.hires_denoise)
        built[fam], benches[fam] = model, b
        if "inference" in sections:
            for name, calls in _expected_calls(b, model).items():
                per = sum(n * estimator.call(fi["flops"][f"{k}x{k}"]) for k, n in calls.items())
                factor = 1.1 if name.startswith("t_") else 1.0
                est.append(budget.Item(f"inference/{fam}/{name}", f"inference/{fam}",
                                       per * factor * (args.repeats + 2 / args.steps), reference=name == "direct"))
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

    # 1. inference and 2. overhead, per model
    for fam, fi in fams.items():
        b, spec = benches[fam], fi["spec"]
        b.upsamplers = inference.make_upsamplers(b.model)
        if "inference" in sections:
            meter = pm.UnetMeter(b.model.model.diffusion_model, dev, timed=not dev.cuda)
            rows = res["inference"].setdefault(fam, [])
            try:
                for name in inference.ROWS:
                    def one(name=name, b=b, meter=meter):
                        inference.ROWS[name][0](b.with_steps(2))  # warm-up
                        return inference.median_of(lambda: inference.run_row(b, name, meter, dev), args.repeats)
                    rows.append(suite.guarded(f"inference/{fam}/{name}", dict(name=name), one))
            finally:
                meter.close()
            inference.summarise([r for r in rows if r["status"] == "done"])
            ref = next((r for r in rows if r["name"] == "direct" and r["status"] == "done"), None)
            for r in rows:
                if ref and r["status"] == "done" and r["name"] != "deep_shrink":  # its steps are not plain steps
                    r["ideal_flops"] = inference.ideal_ratio(r["calls_by_side"], ref["calls_by_side"], fi["flops"])
                    r["ideal_time"] = inference.ideal_ratio(r["calls_by_side"], ref["calls_by_side"],
                                                            fi["seconds_per_call"])
            suite.write()
        if "overhead" in sections:
            rows = res["overhead"].setdefault(fam, [])
            for side in [p // 8 for p in fi["px"][1:]]:
                def over(side=side, b=b, spec=spec):
                    got = overhead.overhead_rows(b.model, spec, side, b.upsamplers, args.overhead_steps, args.cfg,
                                                 b.positive, b.negative, dev)
                    return dict(rows=got)
                rec = suite.guarded(f"overhead/{fam}/{side}", dict(side=side), over)
                rows.extend([dict(r, status=rec["status"]) for r in rec.pop("rows", [])] or [rec])
            suite.write()
    benches.clear()
    built.clear()
    b = None
    dev.free()

    # 3. training, each row with its own model
    if "training" in sections:
        for fam, fi in fams.items():
            fam_rows = []
            for method in methods:
                for gc in (True, False):
                    key = f"training/{fam}/{method}/gc_{'on' if gc else 'off'}"
                    rec = dict(family=fam, method=method, checkpointing=gc, side=train_side,
                               rank=fi["lora"]["lora_rank"] if method == "lora" else None)
                    fam_rows.append(suite.guarded(key, rec, lambda m=method, g=gc, fi=fi: training.train_row(
                        fi["spec"], m, train_side, g, args.train_steps, 1, dev, fi["lora"]["lora_rank"])))
            for r in fam_rows:
                full = next((x for x in fam_rows if x["method"] == "full" and x["checkpointing"] == r["checkpointing"]
                             and x["status"] == "done"), None)
                if full and r["status"] == "done":
                    r["speedup_vs_full"] = full["s_per_step"] / r["s_per_step"]
                    r["memory_vs_full"] = full["peak_mib"] / r["peak_mib"] if dev.cuda else float("nan")
            res["training"].extend(fam_rows)
            suite.write()
    suite.write()
    print(report.table(res))
    print(f"written: {args.out / 'table.md'} and results.json ({suite.clock.elapsed():.0f} s)")
    return res


if __name__ == "__main__":
    main()
