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

``--profile``: one more, profiled run of every inference row (torch.profiler): the GPU's busy time and idle
share per row, and per sampling call its wall time, UNet calls and ms per call (profile.txt, results.json).

Robustness: a warm-up run before each timed row; each row runs in its own try/except that records the
error in the table and goes on (``--smoke`` and ``--strict`` raise instead); results are rewritten after
every row. ``--budget-minutes``: every row is estimated first (FLOP count x measured throughput); the most
expensive rows are dropped until the plan fits, and a row that would overrun the time left is skipped;
the table lists both.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

try:  # imported as part of the pack (self_cascade.benchmark.gpu_suite)
    from . import cost  # the host set-up
    from .perf import inference, report, runner, training
except ImportError:  # run as a script: benchmark/ is sys.path[0]
    import cost
    from perf import inference, report, runner, training

HERE = Path(__file__).resolve().parent

REPO = HERE.parent
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
                   "(default 25: K=700 then executes 18, 72%% of the schedule as at 50 steps, where 20 steps "
                   "would execute 75%%; 4 with --smoke)")
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
    p.add_argument("--rows", default=",".join(inference.default_rows()), help="comma-separated inference rows "
                   f"(direct is the reference of the ratios; opt-in, experimental: {', '.join(inference.OPT_IN)})")
    p.add_argument("--methods", default=",".join(training.METHODS), help="comma-separated training methods")
    p.add_argument("--base-px", type=int, default=None,
                   help="override both models' base size (a CPU check of the real-size layouts at small sizes)")
    p.add_argument("--budget-minutes", type=float, default=7.0,
                   help="time budget of the whole suite (model builds included); rows dropped/skipped to fit")
    p.add_argument("--profile", action="store_true",
                   help="inference rows: one more, profiled run each (torch.profiler): wall time, GPU busy time and "
                        "idle share per row; per sampling call its wall time, UNet calls and ms per call "
                        "(written to profile.txt and results.json; on the CPU the GPU time is 0)")
    p.add_argument("--threads", type=int, default=1, help="CPU torch threads (smoke / --device cpu)")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default=None,
                   help="inference weights (default bf16 on CUDA, fp32 on the CPU)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"output folder (default {OUT_REAL.relative_to(REPO)}; smoke: {OUT_SMOKE.relative_to(REPO)})")
    a = p.parse_args(argv)
    if a.smoke:
        a.device, a.strict = "cpu", not a.keep_going
    a.steps = a.steps or (4 if a.smoke else 25)
    a.overhead_steps = a.overhead_steps or (1 if a.smoke else 3)
    a.train_steps = a.train_steps or (1 if a.smoke else 3)
    if a.smoke:
        a.train_px = 64
    a.out = a.out or (OUT_SMOKE if a.smoke else OUT_REAL)
    return a


def main(argv=None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    cost.setup_host(args.device, args.threads)
    suite = runner.Suite(args, argv)
    sections = {s.strip() for s in args.sections.split(",")}
    fams = runner.families(args)
    train_side = args.train_px // 8
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if any(m not in training.METHODS for m in methods):
        raise SystemExit(f"--methods: choose from {list(training.METHODS)}")
    args.rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    if any(r not in inference.ROWS for r in args.rows):
        raise SystemExit(f"--rows: choose from {list(inference.ROWS)}")
    runner.run_models(suite, fams, sections, methods, train_side)  # 0. plan, 1. inference, 2. overhead
    if "training" in sections:  # 3. each row builds (and frees) its own model
        for fam, fi in fams.items():
            runner.run_training(suite, fam, fi, methods, train_side)
    suite.write()
    print(report.table(suite.res))
    print(f"written: {args.out / 'table.md'} and results.json ({suite.clock.elapsed():.0f} s)")
    return suite.res


if __name__ == "__main__":
    main()
