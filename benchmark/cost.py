"""Cost of the tuning-free and tuned Self-Cascade chains vs direct sampling (a benchmark, not a test).

A thin command line over the performance suite's inference rows (``benchmark/perf/inference.py``;
the whole suite at real sizes is ``benchmark/gpu_suite.py``). All rows use the same sampler,
scheduler, cfg, seed and step budget (``--steps`` = the whole schedule of every sampling call), in
one process, measured side by side; the first row is the reference.

Columns: wall time, its ratio to the reference, UNet forward calls, time inside the UNet forward,
overhead (wall - UNet time: everything that is not the denoising steps themselves) and peak device
memory (CUDA only; n/a on the CPU). The paper's TF figure is 1.04x direct inference.

    python benchmark/cost.py                      # small CPU UNet, 64 -> 128 -> 256 px, 20 steps
    python benchmark/cost.py --quick              # seconds, for the smoke test
    python benchmark/cost.py --real-size sdxl --device cuda   # real-size SDXL UNet (random weights),
                                                              # 1024 -> 2048 -> 4096 px
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

try:  # imported as part of the pack (self_cascade.benchmark.cost)
    from .perf.inference import ROWS, Bench, make_upsamplers, median_run, run_row, summarise
    from .perf.models import SPECS, Device, UnetMeter, build_model, conditioning
except ImportError:  # run as a script: benchmark/ is sys.path[0]
    from perf.inference import ROWS, Bench, make_upsamplers, median_run, run_row, summarise
    from perf.models import SPECS, Device, UnetMeter, build_model, conditioning

REPO = Path(__file__).resolve().parent.parent

DEFAULT_ROWS = "direct,tf_cascade,t_official,t_light"


def measure(b: Bench, names: list[str], repeats: int, device: Device) -> list[dict]:
    """Run each row ``repeats`` times (interleaved), keep the median wall time; returns result dicts."""
    meter = UnetMeter(b.model.model.diffusion_model, device)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    try:
        for _ in range(repeats):
            for n in names:
                runs[n].append(run_row(b, n, meter, device))
    finally:
        meter.close()
    results = [median_run(rs) for rs in runs.values()]
    summarise(results, ref=names[0])
    return results


def table(results: list[dict]) -> str:
    lines = ["| row | wall s | x ref | UNet calls | UNet s | overhead s | peak MB | x mem | out shape |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['wall_s']:.3f} | {r['ratio']:.3f} | {r['calls']} | {r['unet_s']:.3f} | "
                     f"{r['overhead_s']:.3f} | {r['peak_mib']:.0f} | {r['mem_ratio']:.3f} | {tuple(r['shape'])} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--real-size", choices=["sd15", "sdxl"], help="real-size UNet with random weights")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes and 4 steps (smoke test)")
    p.add_argument("--steps", type=int, default=None, help="whole-schedule length (default 20; 4 with --quick)")
    p.add_argument("--base-px", type=int, default=None,
                   help="override the base size in pixels (multiple of 8; e.g. a CPU check of a real-size UNet)")
    p.add_argument("--stages", type=int, default=2, help="cascade stages after the base (2 = 3-stage chain)")
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--sampler", default="euler")
    p.add_argument("--scheduler", default="normal")
    p.add_argument("--K", type=float, default=700.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per row (median; default 3, 1 real-size)")
    p.add_argument("--budget-minutes", type=float, default=6.0,
                   help="real-size only: lower --steps so the timed runs fit (calibrated by a 1-step run)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU torch threads (1: on a shared 2-core machine 2 threads spin and time erratically)")
    p.add_argument("--rows", default=DEFAULT_ROWS,
                   help=f"comma-separated rows of {list(ROWS)}; the first is the reference")
    return p.parse_args(argv)


def setup_host(device: str, threads: int) -> None:
    """ComfyUI in-process on ``device`` with the pack importable as ``self_cascade``."""
    import hostenv  # the dev host harness (dev/ is on the host venv's path)

    hostenv.start(cpu=device == "cpu")
    import torch

    if device == "cpu":
        torch.set_num_threads(threads)


def run(argv=None) -> list[dict]:
    """Parse, build, warm up, measure; prints the table and returns the results."""
    args = parse_args(argv)
    setup_host(args.device, args.threads)
    key = args.real_size or ("quick" if args.quick else "tiny")
    spec = SPECS[key]
    steps = args.steps or (4 if args.quick else 20)
    repeats = args.repeats or (1 if args.real_size else 3)
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; registered: {list(ROWS)}")
    device = Device(args.device)
    t_build = time.perf_counter()
    model = build_model(spec, args.device, seed=args.seed)
    cond, uncond = conditioning(spec, args.batch, 1), conditioning(spec, args.batch, 2)
    base_px = args.base_px or spec["base"]
    b = Bench(model, cond, uncond, base_px, args.stages, steps, args.cfg, args.sampler, args.scheduler,
              args.K, args.seed, args.batch)
    b.upsamplers = make_upsamplers(model)
    print(f"model {key} ({sum(p.numel() for p in model.model.diffusion_model.parameters()) / 1e6:.1f} M params, "
          f"{args.device}) built in {time.perf_counter() - t_build:.1f}s")
    # warm-up (kernels, allocator, model load) and, for real sizes, a step budget that fits the time limit
    t1 = device.timer()
    ROWS[names[0]][0](b.with_steps(1))
    one_step = device.timer() - t1
    if args.real_size:
        per_step = one_step  # a 1-step run of the reference at the target, warm-up included: an over-estimate
        fit = math.floor(args.budget_minutes * 60 / (repeats * len(names) * 1.2 * per_step))
        if fit < steps:
            print(f"1 step at the target took {per_step:.1f}s: lowering steps {steps} -> {max(4, fit)} "
                  f"to fit {args.budget_minutes} min")
            b.steps = steps = max(4, fit)
    for n in names[1:]:
        ROWS[n][0](b.with_steps(2))
    px = [base_px * 2 ** i for i in range(args.stages + 1)]
    print(f"{' -> '.join(f'{p}px' for p in px)}, batch {args.batch}, {steps} steps {args.sampler}/{args.scheduler}, "
          f"cfg {args.cfg}, K {args.K:g}, {repeats} repeat(s), median wall time")
    results = measure(b, names, repeats, device)
    print(table(results))
    return results


if __name__ == "__main__":
    run()
