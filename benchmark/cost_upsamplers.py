"""Cost of the tuned patch: time per sampling step of the patched model vs the plain one (a benchmark).

Same model, size, sampler, steps, cfg and seed; rows interleaved in one process, median of the
repeats. The upsamplers are freshly initialised (cost does not depend on the weights) and on for
every step (end_timestep -1), so the ratio is the per-step price while the patch is active; with
the default end_timestep 100 about the last tenth of the steps run at the plain cost. The paper's
figure for the whole tuned cascade is 1.06x direct inference.

    python benchmark/cost_upsamplers.py                         # tiny CPU UNet, 256 px target
    python benchmark/cost_upsamplers.py --real-size sdxl --device cuda   # 1024 -> 2048 px, random weights
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cost  # noqa: E402  (benchmark/cost.py: model specs, seeded real-size UNets, conditioning)

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
    import comfy.sample
    import torch
    from self_cascade.nodes.patch import apply_upsamplers, model_family
    from self_cascade.upsampler.modules import UpsamplerSet
    from self_cascade.upsampler.taps import derive_taps, emb_dim

    key = args.real_size or ("quick" if args.quick else "tiny")
    spec = cost.SPECS[key]
    steps = args.steps or (2 if args.quick else 10 if args.real_size else 8)
    side = (args.target_px or TARGET_PX[key]) // 8
    model = cost.build_model(spec, args.device)
    unet = model.model.diffusion_model
    cond, uncond = cost.conditioning(spec, 1, 1), cost.conditioning(spec, 1, 2)
    pivot = torch.randn(1, 4, side // 2, side // 2, generator=torch.Generator().manual_seed(3))
    rows = {"plain": model}
    for variant in ("official", "light"):
        size = args.light_size if variant == "light" and args.light_size else 0
        uset = UpsamplerSet.create(derive_taps(unet), emb_dim(unet), model_family(model), variant, size)
        rows[f"{variant} ({uset.num_params() / 1e6:.2f} M)"] = apply_upsamplers(model, uset, pivot, 1.0, -1.0)
    cuda = args.device == "cuda"

    def run(m, n_steps):
        empty = torch.zeros(1, 4, side, side)
        out = comfy.sample.sample(m, comfy.sample.prepare_noise(empty, 0), n_steps, args.cfg, "euler", "normal",
                                  cond, uncond, empty, disable_pbar=True, seed=0)
        if cuda:
            torch.cuda.synchronize()
        return out

    for m in rows.values():  # warm-up: kernels, allocator, model and upsampler loads
        run(m, 1)
    walls: dict[str, list[float]] = {n: [] for n in rows}
    for _ in range(args.repeats):
        for n, m in rows.items():
            t0 = time.perf_counter()
            out = run(m, steps)
            walls[n].append(time.perf_counter() - t0)
            assert torch.isfinite(out).all(), n
    ref = sorted(walls["plain"])[(args.repeats - 1) // 2] / steps
    print(f"model {key} on {args.device}, target {side * 8}px (pivot {side * 4}px), {steps} steps euler, cfg {args.cfg}, "
          f"median of {args.repeats}")
    print("| row | s/step | x plain |\n|---|---|---|")
    results = []
    for n, w in walls.items():
        per = sorted(w)[(args.repeats - 1) // 2] / steps
        results.append(dict(name=n, s_per_step=per, ratio=per / ref))
        print(f"| {n} | {per:.4f} | {per / ref:.3f} |")
    return results


if __name__ == "__main__":
    main()
