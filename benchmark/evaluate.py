"""The paper's tables in miniature: one run, every method, same seeds, same sampler and step setting.

    .host/venv/bin/python benchmark/evaluate.py --name full            # ~15 min on 2 cores
    .host/venv/bin/python benchmark/evaluate.py --quick --name quick   # CI smoke (~2 min)

A miniature on a 1 M-parameter pixel-space model trained by benchmark/train_base.py on procedural
scenes - not Stable Diffusion. Rows go through ComfyUI's own code paths (nodes.common_ksampler,
core PatchModelAddDownscale) and the pack's own node function ``cascade_stage``; the T row's
upsamplers are trained in this run by the pack's ``train_upsamplers`` on high-res renders.
Base size 16x16 (non-square 16x24), see scenes.py. Every sampling call uses euler / normal with the same ``steps`` setting and cfg 1; ``cascade_stage``
executes only the part of its schedule below K (as in the paper), ComfyUI's denoise does not.
Writes benchmark/results/<name>/{table.md, results.json, grid_<target>.png, command.txt}.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import hostenv  # the dev host harness (dev/ is on the host venv's path)
import torch

hostenv.start()
REPO = Path(__file__).resolve().parent.parent
from self_cascade.benchmark import metrics as mt  # noqa: E402
from self_cascade.benchmark import model as bm  # noqa: E402
from self_cascade.benchmark import scenes  # noqa: E402

SAMPLER, SCHEDULER, CFG = "euler", "normal", 1.0
TARGETS = {  # name: (base (H, W), target (H, W))
    "4x": ((16, 16), (32, 32)),
    "16x": ((16, 16), (64, 64)),
    "nonsquare_4x": ((16, 24), (32, 48)),
}
ROWS = ["Real renders (reference)", "Base sample, bicubic up (reference)", "Direct", "Hires fix (denoise 0.7)",
        "Deep Shrink (core)", "Self-Cascade TF", "Self-Cascade T"]


def stage_sizes(base: tuple[int, int], target: tuple[int, int]) -> list[tuple[int, int]]:
    """Sizes after each x2-per-side stage (the last stage lands exactly on the target)."""
    n = max(1, math.ceil(math.log(target[0] * target[1] / (base[0] * base[1]), 4) - 1e-9))
    return [(round(base[0] * (target[0] / base[0]) ** ((i + 1) / n)),
             round(base[1] * (target[1] / base[1]) ** ((i + 1) / n))) for i in range(n)]


class Bench:
    def __init__(self, args):
        import comfy.utils

        comfy.utils.PROGRESS_BAR_ENABLED = False
        hostenv.load_pack()
        from self_cascade.nodes.cascade import StageSettings, cascade_stage

        self.cascade_stage = cascade_stage
        self.StageSettings = StageSettings
        self.args = args
        self.model = bm.load_base_model(args.weights)
        self.pos, self.neg = bm.positive(), bm.negative()

    def ksample(self, model, latent: torch.Tensor, seed: int, denoise: float = 1.0) -> torch.Tensor:
        import nodes  # ComfyUI's nodes.py

        out = nodes.common_ksampler(model, seed, self.args.steps, CFG, SAMPLER, SCHEDULER, self.pos, self.neg,
                                    {"samples": latent}, denoise=denoise)[0]
        return out["samples"]

    def base(self, n: int, hw: tuple[int, int], seed: int) -> torch.Tensor:
        return self.ksample(self.model, torch.zeros(n, 3, *hw), seed)

    def direct(self, n, base_hw, target, seed):
        return self.ksample(self.model, torch.zeros(n, 3, *target), seed)

    def hires(self, base_lat, target, seed):
        import comfy.utils

        up = comfy.utils.common_upscale(base_lat, target[1], target[0], "bicubic", "disabled")
        return self.ksample(self.model, up, seed, denoise=0.7)

    def deep_shrink(self, n, base_hw, target, seed):
        from comfy_extras.nodes_model_downscale import PatchModelAddDownscale

        factor = target[0] / base_hw[0]
        m = PatchModelAddDownscale.execute(self.model, 1, factor, 0.0, 0.35, True, "bicubic", "bicubic")[0]
        return self.ksample(m, torch.zeros(n, 3, *target), seed)

    def cascade(self, base_lat, base_hw, target, seed, upsamplers=None):
        lat = {"samples": base_lat}
        for hw in stage_sizes(base_hw, target):
            # every stage here is exactly x2 per side; the node's width/height inputs count 8 px per latent
            # cell (SD's VAE), which this pixel-space model does not have, so the scale input is used
            settings = self.StageSettings(scale=2.0, upscale_method="bicubic", seed=seed, steps=self.args.steps,
                                          cfg=CFG, sampler_name=SAMPLER, scheduler=SCHEDULER, K=700.0)
            lat = self.cascade_stage(self.model, self.pos, self.neg, lat, settings, upsamplers, disable_pbar=True)
            assert tuple(lat["samples"].shape[-2:]) == hw, (lat["samples"].shape, hw)
        return lat["samples"]


def timed(fn, *a, **k):
    """(result, (wall seconds, process CPU seconds)); CPU time is the fairer cost on shared cores."""
    t, c = time.perf_counter(), time.process_time()
    out = fn(*a, **k)
    return out, (time.perf_counter() - t, time.process_time() - c)


def _add(a: tuple, b: tuple) -> tuple:
    return tuple(x + y for x, y in zip(a, b, strict=True))


def train_t(bench: Bench, args) -> tuple[object, dict]:
    """Upsamplers for the T row, trained here by the pack's train_upsamplers on high-res renders."""
    from self_cascade.nodes.training import TrainConfig, train_upsamplers

    n = args.train_images
    b = scenes.BASE_SHORT_SIDE  # crops of the first stage's size from renders at both stages' sizes
    imgs = [scenes.render(scenes.sample_scenes(n, 777), 2 * b, 2 * b), scenes.render(scenes.sample_scenes(n, 778), 4 * b, 4 * b)]
    cfg = TrainConfig(width=2 * b, height=2 * b, scale=2.0, steps=args.train_steps, learning_rate=args.train_lr,
                      batch_size=args.train_batch, K=700.0, end_timestep=100.0, pivot_mode="downsample",
                      variant=args.variant, variant_size=args.variant_size, seed=0, checkpoint_every=0,
                      latent_cell=1, log_every=max(1, args.train_steps // 10))
    t = time.perf_counter()
    res = train_upsamplers(bench.model, imgs, scenes.to_latent, bench.pos, config=cfg)
    info = {"steps": res.steps_done, "seconds": round(time.perf_counter() - t, 1), "variant": args.variant,
            "variant_size": args.variant_size, "lr": args.train_lr, "batch": args.train_batch,
            "params": sum(p.numel() for p in res.upsamplers.parameters()),
            "loss_first": round(float(sum(res.losses[:10]) / max(1, len(res.losses[:10]))), 5),
            "loss_last": round(float(sum(res.losses[-10:]) / max(1, len(res.losses[-10:]))), 5),
            "stopped": res.stopped_reason}
    return res.upsamplers, info


def evaluate_target(bench: Bench, name: str, args, upsamplers, t_reason: str) -> dict:
    base_hw, target = TARGETS[name]
    n, seed = args.samples, args.seed
    aspect = base_hw[1] / base_hw[0]
    real = scenes.render(scenes.sample_scenes(n, 10_000 + seed, aspect), *target)
    real_ref = scenes.render(scenes.sample_scenes(max(n, 64), 20_000 + seed, aspect), *target)
    out, times = {}, {}
    base_lat, t_base = timed(bench.base, n, base_hw, seed)
    base_img = scenes.from_latent(base_lat)
    out["Direct"], times["Direct"] = timed(bench.direct, n, base_hw, target, seed)
    up = torch.nn.functional.interpolate(base_lat, size=target, mode="bicubic", align_corners=False)
    out["Base sample, bicubic up (reference)"], times["Base sample, bicubic up (reference)"] = up, t_base
    lat, t = timed(bench.hires, base_lat, target, seed)
    out["Hires fix (denoise 0.7)"], times["Hires fix (denoise 0.7)"] = lat, _add(t, t_base)
    out["Deep Shrink (core)"], times["Deep Shrink (core)"] = timed(bench.deep_shrink, n, base_hw, target, seed)
    lat, t = timed(bench.cascade, base_lat, base_hw, target, seed)
    out["Self-Cascade TF"], times["Self-Cascade TF"] = lat, _add(t, t_base)
    if upsamplers is not None:
        lat, t = timed(bench.cascade, base_lat, base_hw, target, seed, upsamplers)
        out["Self-Cascade T"], times["Self-Cascade T"] = lat, _add(t, t_base)
    images = {k: scenes.from_latent(v) for k, v in out.items()}
    images["Real renders (reference)"] = real
    rows = {}
    for row in ROWS:
        if row not in images:
            rows[row] = {"note": t_reason}
            continue
        img = images[row]
        r = {"composition": mt.composition(img), "composition_strict": mt.composition(img, min_area=0.0025),
             **mt.fidelity(img, real_ref, seed=seed),
             "base_consistency": mt.base_consistency(img, base_img, seed=seed),
             "detail": mt.detail_ratio(img, real, base_hw)}
        if row in times:
            r["time_vs_direct"] = times[row][0] / times["Direct"][0]
            r["cpu_vs_direct"] = times[row][1] / times["Direct"][1]
            r["seconds"], r["cpu_seconds"] = times[row]
        rows[row] = r
    rows["Base samples at base size (reference)"] = {"composition": mt.composition(base_img),
                                                     "composition_strict": mt.composition(base_img, min_area=0.0025),
                                                     "seconds": t_base[0]}
    grid_path = Path(args.out) / f"grid_{name}.png"
    save_grid(grid_path, [(row, images[row]) for row in ROWS if row in images], args.grid_cols)
    return {"base": base_hw, "target": target, "samples": n, "rows": rows, "grid": grid_path.name}


def save_grid(path: Path, rows: list[tuple[str, torch.Tensor]], cols: int) -> None:
    """Rows = methods (in ROWS order), columns = the first ``cols`` seeds; a 2 px gap between cells."""
    import numpy as np
    from PIL import Image

    h, w = rows[0][1].shape[1:3]
    cols = min(cols, rows[0][1].shape[0])
    canvas = torch.ones(len(rows) * (h + 2), cols * (w + 2), 3)
    for i, (_, img) in enumerate(rows):
        for j in range(cols):
            canvas[i * (h + 2):i * (h + 2) + h, j * (w + 2):j * (w + 2) + w] = img[j]
    Image.fromarray((canvas.numpy() * 255).round().astype(np.uint8)).save(path, optimize=True)


def fmt(v, spec=".2f") -> str:
    """'-' only where there is no value (reference rows' times); non-finite values print as nan/inf."""
    return "-" if v is None else format(v, spec)


def write_table(path: Path, results: dict, t_info: dict | None, t_reason: str, command: str) -> None:
    lines = ["# Self-Cascade benchmark (miniature: a ~1 M-parameter pixel-space UNet on procedural scenes, not SD)",
             "", f"Command: `{command}`", ""]
    for name, res in results.items():
        (bh, bw), (th, tw) = res["base"], res["target"]
        base_row = res["rows"]["Base samples at base size (reference)"]
        lines += [f"## {name}: {bh}x{bw} -> {th}x{tw} (HxW), {res['samples']} samples; base composition at "
                  f"{bh}x{bw}: {base_row['composition']:.2f} (strict {base_row['composition_strict']:.2f})", "",
                  "| Method | Composition (exact count) | Composition, strict (>=0.25% area) | SWD coarse (x1e3) "
                  "| SWD fine (x1e3) | Base consistency (SWD) | Detail (x real) | Wall time vs direct "
                  "| CPU time vs direct |", "|---|---|---|---|---|---|---|---|---|"]
        for row in ROWS:
            r = res["rows"][row]
            if "note" in r:
                lines.append(f"| {row} | not run ({r['note']}) | | | | | | | |")
                continue
            lines.append(f"| {row} | {fmt(r['composition'])} | {fmt(r['composition_strict'])} | {fmt(r['swd_coarse'], '.1f')} | "
                         f"{fmt(r['swd_fine'], '.1f')} | {fmt(r['base_consistency'], '.1f')} | {fmt(r['detail'])} | "
                         f"{fmt(r.get('time_vs_direct'))} | {fmt(r.get('cpu_vs_direct'))} |")
        lines += ["", f"Grid: `{res['grid']}` (rows = methods in table order, columns = the same seeds).", ""]
    lines.append("T row upsamplers: " + (json.dumps(t_info) if t_info else f"not run ({t_reason})"))
    lines += ["", "Lower SWD is better; detail 1.0 = as much above-base-Nyquist energy inside objects as real "
              "renders; times include the base stage where a row needs it (reference rows: not a method)."]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="full")
    ap.add_argument("--quick", action="store_true", help="few samples, one target, few training steps (CI)")
    ap.add_argument("--targets", nargs="*", default=None, choices=list(TARGETS))
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (schedule length) for every call")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-steps", type=int, default=None)
    ap.add_argument("--train-images", type=int, default=64)
    ap.add_argument("--train-batch", type=int, default=8)
    ap.add_argument("--train-lr", type=float, default=1e-3)
    ap.add_argument("--variant", default="light")
    ap.add_argument("--variant-size", type=int, default=32)
    ap.add_argument("--no-t", action="store_true", help="skip the T row (report it as not run)")
    ap.add_argument("--grid-cols", type=int, default=6)
    ap.add_argument("--out", default=None)
    ap.add_argument("--weights", default=str(bm.WEIGHTS), help="base model safetensors")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    quick = args.quick
    args.targets = args.targets or (["4x"] if quick else list(TARGETS))
    args.samples = args.samples or (4 if quick else 32)
    args.steps = args.steps or (8 if quick else 20)
    args.train_steps = args.train_steps or (4 if quick else 300)
    if quick:
        args.train_images = min(args.train_images, 8)
    args.out = args.out or str(REPO / "benchmark" / "results" / args.name)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    command = "python benchmark/evaluate.py " + " ".join(argv if argv is not None else sys.argv[1:])
    t0 = time.perf_counter()
    bench = Bench(args)
    bench.base(2, (scenes.BASE_SHORT_SIDE,) * 2, 0)  # warm-up: first-call costs stay out of the timings
    upsamplers, t_info, t_reason = None, None, "--no-t"
    if not args.no_t:
        try:
            upsamplers, t_info = train_t(bench, args)
        except ImportError as e:  # the training module is not in the pack yet
            t_reason = f"train_upsamplers unavailable: {e}"
    results = {name: evaluate_target(bench, name, args, upsamplers, t_reason) for name in args.targets}
    write_table(Path(args.out) / "table.md", results, t_info, t_reason, command)
    total = time.perf_counter() - t0
    (Path(args.out) / "results.json").write_text(json.dumps(
        {"command": command, "total_seconds": round(total, 1), "t_training": t_info, "t_reason": t_reason,
         "results": results}, indent=1, default=str))
    (Path(args.out) / "command.txt").write_text(command + f"\n# total wall time {total:.0f} s\n")
    print((Path(args.out) / "table.md").read_text())
    print(f"total wall time {total:.0f} s")
    return results


if __name__ == "__main__":
    main()
