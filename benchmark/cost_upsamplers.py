"""Cost of the tuned patch: time per sampling step of the patched model vs the plain one (a benchmark).

A thin command line over the performance suite's overhead rows (``benchmark/perf/overhead.py``; the
whole suite at real sizes is ``benchmark/gpu_suite.py``). Same model, size, sampler, steps, cfg and
seed; median of the repeats. The upsamplers are freshly initialised (cost does not depend on the
weights) and on for every step (end_timestep -1), so the ratio is the per-step price while the patch
is active; with the default end_timestep 100 about the last tenth of the steps run at the plain cost.
The pivot pass (frozen input blocks + middle block on the half-size pivot) is also timed alone and
given as a share of a plain step. The paper's figure for the whole tuned cascade is 1.06x direct.

    python benchmark/cost_upsamplers.py                         # tiny CPU UNet, 256 px target
    python benchmark/cost_upsamplers.py --real-size sdxl --device cuda   # 1024 -> 2048 px, random weights
"""
from __future__ import annotations

import argparse
from pathlib import Path

try:  # imported as part of the pack (self_cascade.benchmark.cost_upsamplers)
    from . import cost  # the host set-up
except ImportError:  # run as a script: benchmark/ is sys.path[0]
    import cost

HERE = Path(__file__).resolve().parent

TARGET_PX = {"tiny": 256, "quick": 64, "sd15": 1024, "sdxl": 2048}


def main(argv=None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--real-size", choices=["sd15", "sdxl"])
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes, 2 steps (smoke test)")
    p.add_argument("--target-px", type=int, default=None, help="sampled size in pixels (the pivot is half of it)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--light-size", type=int, default=None, help="bottleneck width of the light variant")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    cost.setup_host(args.device, args.threads)
    from self_cascade.benchmark.perf.models import Device
    from self_cascade.benchmark.perf.overhead import overhead_rows
    from self_cascade.nodes.patch import model_family
    from self_cascade.upsampler.modules import UpsamplerSet
    from self_cascade.upsampler.taps import derive_taps, emb_dim

    key = args.real_size or ("quick" if args.quick else "tiny")
    spec = cost.SPECS[key]
    steps = args.steps or (2 if args.quick else 10 if args.real_size else 8)
    side = (args.target_px or TARGET_PX[key]) // 8
    model = cost.build_model(spec, args.device)
    unet = model.model.diffusion_model
    cond, uncond = cost.conditioning(spec, 1, 1), cost.conditioning(spec, 1, 2)
    sets = {}
    for variant in ("official", "light"):
        size = args.light_size if variant == "light" and args.light_size else 0
        sets[variant] = UpsamplerSet.create(derive_taps(unet), emb_dim(unet), model_family(model), variant, size)
    rows = overhead_rows(model, spec, side, sets, steps, args.cfg, cond, uncond, Device(args.device), args.repeats)
    print(f"model {key} on {args.device}, target {side * 8}px (pivot {side * 4}px), {steps} steps euler, cfg {args.cfg}, "
          f"median of {args.repeats}")
    print("| row | s/step | x plain | pivot pass share | peak MiB |\n|---|---|---|---|---|")
    results = []
    for r in rows:
        name = r["name"] if r["name"] == "plain" else f"{r['name']} ({r['params'] / 1e6:.2f} M)"
        share = r.get("pivot_share", float("nan"))
        results.append(dict(r, name=name))
        print(f"| {name} | {r['s_per_step']:.4f} | {r['ratio']:.3f} | {share:.3f} | {r['peak_mib']:.0f} |")
    return results


if __name__ == "__main__":
    main()
