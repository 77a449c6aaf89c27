"""The paper's tables in miniature: one run, every method, same seeds, same sampler and step setting.

    .host/venv/bin/python benchmark/evaluate.py --name full            # the committed full run
    .host/venv/bin/python benchmark/evaluate.py --quick --name quick   # CI smoke (under a minute)

A miniature on a 1 M-parameter pixel-space model trained by benchmark/train_base.py on procedural
scenes, in SD's noise regime (data std about 1 in the sampler's space) - not Stable Diffusion.
``--caption``: the captioned model at cfg 5, each seed asking for a real scene's caption (training.caption_conds).
Rows (rows.py) go through ComfyUI's own code paths and the pack's ``cascade_stage``; trained rows
(training.py: T through the pack's training core, full fine-tuning and LoRA through ComfyUI's own
training loop / LoRA trainer) are trained in this run with the same step budgets, snapshots at each
budget giving the steps-to-quality curves. Every row is scored on several disjoint seed sets
(scoring.py, 95% intervals). Base size 16x16 (non-square 16x24), see scenes.py.
Writes benchmark/results/<name>/{table.md, results.json, grid_*.png, k_sweep_*.png,
steps_to_quality_*.png, command.txt}.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from . import metrics as mt
from . import model as bm
from . import report as rep
from . import scenes
from . import training as tr
from .rows import Sampling, timed
from .scoring import pool, score_set

REPO = Path(__file__).resolve().parents[2]

TARGETS = {  # name: (base (H, W), target (H, W))
    "4x": ((16, 16), (32, 32)),
    "16x": ((16, 16), (64, 64)),
    "nonsquare_4x": ((16, 24), (32, 48)),
    "64x": ((16, 16), (128, 128)),  # three x2-per-side stages
}
REAL, BICUBIC = "Real renders (reference)", "Base sample, bicubic up (reference)"
DIRECT, HIRES, DEEP = "Direct", "Hires fix (denoise 0.7)", "Deep Shrink (core)"
TF, FRESH, T = "Self-Cascade TF (K=700)", "Self-Cascade T, untrained (fresh set)", "Self-Cascade T (trained)"
T_OFF = "Self-Cascade T (trained, official size)"
FT, LORA = "Full fine-tuning (direct at target)", "LoRA (direct at target)"
ROWS = [REAL, BICUBIC, DIRECT, HIRES, DEEP, TF, FRESH, T, T_OFF, FT, LORA]
USES_BASE = {BICUBIC, HIRES, TF, FRESH, T, T_OFF}  # rows that start from the base sample: pivot IoU applies


def _add(a: tuple, b: tuple) -> tuple:
    return tuple(x + y for x, y in zip(a, b, strict=True))


def train_all(S: Sampling, args, workdir: Path) -> dict:
    """Every trained row, with snapshots at the same step budgets (training/ module docstring)."""
    budgets, c = args.budgets, time.process_time()
    out = {"fresh": tr.fresh_set(S.model, args.variant, args.variant_size)}
    t_pos, ft_pos, kw = S.pos, lambda hw: S.pos, {}
    if args.caption:  # one caption per training image; the null caption for dropout
        t_pos, ft_pos, kw = tr.caption_conds(args.train_images, args.caption_dropout, args.cfg)
    out["t"], out["t_info"] = tr.train_t(S.model, t_pos, budgets, n_images=args.train_images, lr=args.train_lr,
                                         batch=args.train_batch, variant=args.variant,
                                         variant_size=args.variant_size, workdir=workdir,
                                         save_path=args.save_upsamplers, **kw)
    print(f"  T trained: cpu {time.process_time() - c:.0f}s", flush=True)
    if args.official:  # the official layout (two full-width ResBlocks per tap): its final budget only
        (workdir / "official").mkdir()
        snaps, out["t_off_info"] = tr.train_t(S.model, t_pos, [max(budgets)], n_images=args.train_images,
                                              lr=args.train_lr, batch=args.train_batch, variant="official",
                                              variant_size=0, workdir=workdir / "official", **kw)
        out["t_off"] = snaps[max(budgets)]
        print(f"  T official size trained: cpu {time.process_time() - c:.0f}s", flush=True)
    out["ft"], out["lora"] = {}, {}
    for name in args.ft_targets:
        hw = TARGETS[name][1]
        out["ft"][name] = tr.train_full(args.weights, ft_pos(hw), budgets, hw=hw, n_images=args.train_images,
                                        lr=args.ft_lr, batch=args.train_batch)
        print(f"  full FT {name}: cpu {time.process_time() - c:.0f}s", flush=True)
        out["lora"][name] = tr.train_lora(args.weights, ft_pos(hw), budgets, hw=hw, n_images=args.train_images,
                                          lr=args.lora_lr, batch=args.train_batch, rank=args.lora_rank)
    return out


def evaluate_target(S: Sampling, name: str, args, trained: dict) -> dict:
    base_hw, target = TARGETS[name]
    n, aspect, final = args.samples, base_hw[1] / base_hw[0], max(args.budgets)
    per_row: dict[str, list] = {r: [] for r in ROWS}
    sweep_k: dict[float, list] = {k: [] for k in args.k_sweep} if name in args.sweep_targets else {}
    sweep_s: dict[float, list] = {s: [] for s in args.strengths} if name in args.sweep_targets else {}
    steps: dict[str, dict[int, list]] = {}
    if name == args.steps_target and name in trained["ft"]:
        # step 0 = untrained: the fresh set for T, the base model (Direct) for full fine-tuning and LoRA
        steps = {m: {b: [] for b in [0, *args.budgets]} for m in ("T", "Full fine-tuning", "LoRA")}
    base_counts, grid = [], None
    for si, seed in enumerate(args.seed_sets):
        real_sc = scenes.sample_scenes(n, 10_000 + seed, aspect)
        real, caption = scenes.render(real_sc, *target), scenes.captions(real_sc) if args.caption else None
        if args.caption:  # each seed asks for the caption of one real scene (as recipes.py)
            S.pos, S.neg = bm.caption_cond(caption), bm.caption_cond(torch.zeros_like(caption))
        real_ref = scenes.render(scenes.sample_scenes(max(n, 64), 20_000 + seed, aspect), *target)
        base_lat, t_base = timed(S.base, n, base_hw, seed)
        base_img = scenes.from_latent(base_lat)
        base_counts += mt.count_objects(base_img)
        lat, times = {}, {}
        lat[DIRECT], times[DIRECT] = timed(S.direct, n, target, seed)
        lat[BICUBIC] = torch.nn.functional.interpolate(base_lat, size=target, mode="bicubic", align_corners=False)
        times[BICUBIC] = t_base
        x, t = timed(S.hires, base_lat, target, seed)
        lat[HIRES], times[HIRES] = x, _add(t, t_base)
        lat[DEEP], times[DEEP] = timed(S.deep_shrink, n, base_hw, target, seed)
        cascades = [(TF, None), (FRESH, trained["fresh"]), (T, trained["t"][final])]
        if "t_off" in trained:
            cascades.append((T_OFF, trained["t_off"]))
        for row, ups in cascades:
            x, t = timed(S.cascade, base_lat, base_hw, target, seed, ups)
            lat[row], times[row] = x, _add(t, t_base)
        if name in trained["ft"]:
            mp, snaps, _ = trained["ft"][name]
            tr.load_full_snapshot(mp, snaps[final])
            lat[FT], times[FT] = timed(S.direct, n, target, seed, mp)
            mp, snaps, _ = trained["lora"][name]
            tr.load_lora_snapshot(mp, snaps[final])
            lat[LORA], times[LORA] = timed(S.direct, n, target, seed, mp)
        images = {k: scenes.from_latent(v) for k, v in lat.items()}
        images[REAL] = real
        common = dict(base_img=base_img, real=real, real_ref=real_ref, seed=seed, caption=caption)
        for row in ROWS:
            if row in images:
                per_row[row].append(score_set(images[row], uses_base=row in USES_BASE, times=times.get(row), **common))
        for K in sweep_k:
            img = images[TF] if K == 700 else scenes.from_latent(S.cascade(base_lat, base_hw, target, seed, K=K))
            sweep_k[K].append(score_set(img, uses_base=True, **common))
        for st in sweep_s:
            img = images[FRESH] if st == 1.0 else scenes.from_latent(
                S.cascade(base_lat, base_hw, target, seed, trained["fresh"], strength=st))
            sweep_s[st].append(score_set(img, uses_base=True, **common))
        for b in [0, *args.budgets] if steps else []:
            img = images[FRESH] if b == 0 else images[T] if b == final else scenes.from_latent(
                S.cascade(base_lat, base_hw, target, seed, trained["t"][b]))
            steps["T"][b].append(score_set(img, uses_base=True, **common))
            for key, label, row, load in (("ft", "Full fine-tuning", FT, tr.load_full_snapshot),
                                          ("lora", "LoRA", LORA, tr.load_lora_snapshot)):
                if b == 0:
                    img = images[DIRECT]
                elif b == final:
                    img = images[row]
                else:
                    mp, snaps, _ = trained[key][name]
                    load(mp, snaps[b])
                    img = scenes.from_latent(S.direct(n, target, seed, mp))
                steps[label][b].append(score_set(img, uses_base=False, **common))
        if si == 0:
            grid = [(row, images[row]) for row in ROWS if row in images]
    grid_path = Path(args.out) / f"grid_{name}.png"
    rep.save_grid(grid_path, grid, args.grid_cols)
    k = sum(c == 1 for c in base_counts)
    res = {"base": base_hw, "target": target, "samples_per_set": n, "seed_sets": args.seed_sets,
           "base_composition": k / len(base_counts), "base_composition_ci": mt.wilson(k, len(base_counts)),
           "rows": {r: pool(v) for r, v in per_row.items() if v}, "grid": grid_path.name,
           "k_sweep": {K: pool(v) for K, v in sweep_k.items()},
           "strength_sweep": {s: pool(v) for s, v in sweep_s.items()},
           "steps": {m: {b: pool(v) for b, v in d.items()} for m, d in steps.items()}}
    if res["k_sweep"]:
        rep.plot_k_sweep(Path(args.out) / f"k_sweep_{name}.png", name, res["k_sweep"])
    if res["steps"]:
        rep.plot_steps(Path(args.out) / f"steps_to_quality_{name}.png", name, res["steps"])
    return res


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="full")
    ap.add_argument("--quick", action="store_true", help="few samples, one target, few training steps (CI)")
    ap.add_argument("--targets", nargs="*", default=None, choices=list(TARGETS))
    ap.add_argument("--samples", type=int, default=None, help="samples per seed set")
    ap.add_argument("--seed-sets", type=int, nargs="+", default=None, help="disjoint seed sets (batch seeds)")
    ap.add_argument("--steps", type=int, default=None, help="sampler steps (schedule length) for every call")
    ap.add_argument("--budgets", type=int, nargs="+", default=None,
                    help="training step budgets (snapshots) shared by T, full fine-tuning and LoRA; the last is the row")
    ap.add_argument("--train-images", type=int, default=128, help="renders per size for T (FT/LoRA get 2x at the target)")
    ap.add_argument("--train-batch", type=int, default=8)
    # learning rates chosen by benchmark/recipe_sweep.py on seed sets disjoint from the reported ones
    ap.add_argument("--train-lr", type=float, default=3e-4, help="upsampler learning rate")
    ap.add_argument("--ft-lr", type=float, default=3e-4, help="full fine-tuning learning rate")
    ap.add_argument("--lora-lr", type=float, default=3e-3)
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--ft-targets", nargs="*", default=None, choices=list(TARGETS),
                    help="targets that get full fine-tuning and LoRA rows (each trains at its target size)")
    ap.add_argument("--steps-target", default="4x", help="target of the steps-to-quality comparison")
    ap.add_argument("--sweep-targets", nargs="*", default=None, help="targets with the K and strength sweeps")
    ap.add_argument("--k-sweep", type=float, nargs="+", default=None)
    ap.add_argument("--strengths", type=float, nargs="+", default=None, help="untrained-set strength sweep")
    ap.add_argument("--variant", default="light")
    ap.add_argument("--variant-size", type=int, default=32)
    ap.add_argument("--no-official", dest="official", action="store_false",
                    help="skip the official-size T row (trained with T's final budget and learning rate)")
    ap.add_argument("--save-upsamplers", type=Path, default=None, help="also save the trained T set here")
    ap.add_argument("--grid-cols", type=int, default=6)
    ap.add_argument("--out", default=None)
    ap.add_argument("--weights", default=None, help="base model safetensors (default: the committed one)")
    ap.add_argument("--caption", action="store_true", help="the captioned base model at --cfg (module docstring)")
    ap.add_argument("--cfg", type=float, default=None, help="cfg of every sampling call (default 1; --caption: 5)")
    ap.add_argument("--caption-dropout", type=float, default=0.1, help="--caption: share of null training captions")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    quick = args.quick
    args.weights = args.weights or str(bm.CAPTION_WEIGHTS if args.caption else bm.WEIGHTS)
    args.cfg = args.cfg if args.cfg is not None else 5.0 if args.caption else 1.0
    args.targets = args.targets or (["4x"] if quick else list(TARGETS))
    args.samples = args.samples or (4 if quick else 16)
    args.seed_sets = args.seed_sets or ([0] if quick else [0, 1000, 2000])
    args.steps = args.steps or (8 if quick else 20)
    args.budgets = sorted(args.budgets or ([2, 4] if quick else [10, 20, 40, 100, 200]))
    args.ft_targets = ["4x"] if args.ft_targets is None else args.ft_targets
    args.sweep_targets = args.sweep_targets if args.sweep_targets is not None else ["4x", "16x"]
    args.k_sweep = args.k_sweep or ([500.0, 700.0] if quick else [300.0, 400.0, 500.0, 600.0, 700.0, 800.0])
    args.strengths = args.strengths or ([0.5, 1.0] if quick else [0.25, 0.5, 1.0])
    if quick:
        args.train_images = min(args.train_images, 8)
    args.out = args.out or str(REPO / "benchmark" / "results" / args.name)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    command = "python benchmark/evaluate.py " + " ".join(argv if argv is not None else sys.argv[1:])
    t0 = time.perf_counter()
    import comfy.utils

    comfy.utils.PROGRESS_BAR_ENABLED = False
    model = bm.load_base_model(args.weights)
    if args.caption != bm.is_captioned(model.model.diffusion_model.state_dict()):
        raise SystemExit(f"{args.weights}: --caption needs the captioned base model, and only it")
    S = Sampling(model, bm.positive(), bm.negative(), args.steps, cfg=args.cfg)
    S.base(2, (scenes.BASE_SHORT_SIDE,) * 2, 0)  # warm-up: first-call costs stay out of the timings
    print(f"[{time.perf_counter() - t0:.0f}s, cpu {time.process_time():.0f}s] set up; training", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        trained = train_all(S, args, Path(tmp))
    t_train = time.perf_counter() - t0
    results = {}
    for name in args.targets:
        print(f"[{time.perf_counter() - t0:.0f}s, cpu {time.process_time():.0f}s] evaluating {name}", flush=True)
        results[name] = evaluate_target(S, name, args, trained)
    total = time.perf_counter() - t0
    info = {"T": trained["t_info"], **({"T official size": trained["t_off_info"]} if "t_off_info" in trained else {}),
            **{f"Full fine-tuning {k}": v[2] for k, v in trained["ft"].items()},
            **{f"LoRA {k}": v[2] for k, v in trained["lora"].items()}}
    rep.write_table(Path(args.out) / "table.md", results, info, command, vars(args), total, t_train)
    (Path(args.out) / "results.json").write_text(json.dumps(
        {"command": command, "total_seconds": round(total, 1), "training_seconds": round(t_train, 1),
         "training": info, "args": {k: str(v) for k, v in vars(args).items()}, "results": results},
        indent=1, default=str))
    (Path(args.out) / "command.txt").write_text(command + f"\n# total wall time {total:.0f} s\n")
    print((Path(args.out) / "table.md").read_text())
    print(f"total wall time {total:.0f} s (training {t_train:.0f} s)")
    return results


if __name__ == "__main__":
    main()
