"""Does training the upsamplers earn its place? The four training recipes and per-stage K, on the captioned model.

    .host/venv/bin/python benchmark/recipes.py --targets 4x 16x --name recipes   # one process
    benchmark/recipes_parts.sh          # the committed tables: 25 processes joined by --merge
    .host/venv/bin/python benchmark/recipes.py --quick --name quick              # CI smoke

The base model is the captioned one (model.CAPTION_WEIGHTS: shape and colour class, null caption
for dropout), so every row samples each seed from the caption of a real scene at cfg > 1 (the null
caption is the negative) and the official pseudo pivot (a base-model sample from the same caption)
shares its caption with its target as on SD. Rows, same seeds and step setting: direct, hires fix,
TF (K=700), the fresh (untrained) set, T trained with each recipe (training.RECIPES: ground-truth or
generated pivot x t <= K or t over the whole schedule; light set, one budget, caption dropout), the
official-size set for ``--official`` recipes, and TF with a per-stage K schedule (first stage / later
stages) at the multi-stage targets. Verdicts by the rule in docs/BENCHMARK.md (recipe_report.py).
Writes benchmark/results/<name>/{table.md, results.json, grid_*.png, command.txt}.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from . import model as bm
from . import recipe_report as rr
from . import report as rep
from . import scenes
from . import training as tr
from .evaluate import TARGETS
from .rows import Sampling, stage_sizes, timed
from .scoring import pool, score_set

REPO = Path(__file__).resolve().parents[2]
DIRECT, HIRES, TF, FRESH = "Direct", "Hires fix (denoise 0.7)", "TF (K=700)", "T untrained (fresh set)"
USES_BASE = {HIRES, TF, FRESH}
GROUPS = {"baselines": "direct, hires fix, TF, the fresh set", "trained": "the trained sets",
          "schedules": "TF with per-stage K"}


def t_row(recipe: str, variant: str = "light") -> str:
    return f"T {recipe}" + (" (official size)" if variant == "official" else "")


def k_row(schedule: tuple[float, float]) -> str:
    return f"TF K {schedule[0]:g}/{schedule[1]:g}"


def null_cond(n: int) -> list:
    return bm.caption_cond(torch.zeros(n, scenes.CAPTION_DIM))


def train_sets(S: Sampling, args, workdir: Path) -> tuple[dict, dict]:
    """{row: UpsamplerSet} for the fresh set and every trained recipe, and the training summaries;
    with ``--load-sets`` the trained sets (and summaries) of an earlier ``--save-sets`` run instead."""
    from ...upsampler.fileformat import load_upsamplers, save_upsamplers

    sets, info = {FRESH: tr.fresh_set(S.model, args.variant, args.variant_size)}, {}
    for d in args.load_sets:
        index = json.loads((d / "index.json").read_text())
        for row, entry in index.items():
            sets[row], info[row] = load_upsamplers(str(d / entry["file"])), entry["info"]
    caps = tr.t_captions(args.train_images)
    pos = [bm.caption_cond(c[None]) for c in caps]  # one caption per training image
    jobs = [(r, args.variant, args.variant_size) for r in args.recipes] + [(r, "official", 0) for r in args.official]
    for recipe, variant, size in jobs:
        row, c = t_row(recipe, variant), time.process_time()
        d = workdir / row.replace("/", "_").replace(" ", "_")
        d.mkdir()
        snaps, info[row] = tr.train_t(S.model, pos, [args.budget], n_images=args.train_images, lr=args.lr,
                                      batch=args.batch, variant=variant, variant_size=size, workdir=d,
                                      recipe=recipe, empty=null_cond(1), caption_dropout=args.caption_dropout,
                                      generated_cfg=args.cfg)
        sets[row] = snaps[args.budget]
        print(f"  {row}: trained, cpu {time.process_time() - c:.0f}s", flush=True)
        if args.save_sets is not None:
            args.save_sets.mkdir(parents=True, exist_ok=True)
            name = row.replace("/", "_").replace(" ", "_").replace("(", "").replace(")", "") + ".safetensors"
            save_upsamplers(str(args.save_sets / name), sets[row])
            index_path = args.save_sets / "index.json"
            index = json.loads(index_path.read_text()) if index_path.exists() else {}
            index[row] = {"file": name, "info": info[row]}
            index_path.write_text(json.dumps(index, indent=1))
    if "trained" not in args.groups:
        sets = {FRESH: sets[FRESH]}
    if "baselines" not in args.groups:
        sets.pop(FRESH)
    return sets, info


def evaluate_target(S: Sampling, name: str, args, sets: dict) -> dict:
    base_hw, target = TARGETS[name]
    n, aspect = args.samples, base_hw[1] / base_hw[0]
    multi = name in args.k_targets and len(stage_sizes(base_hw, target)) > 1
    schedules = args.k_schedules if multi and "schedules" in args.groups else []
    per_row: dict[str, list] = {}
    base_counts, grid = [], None
    for si, seed in enumerate(args.seed_sets):
        real_sc = scenes.sample_scenes(n, 10_000 + seed, aspect)
        caption = scenes.captions(real_sc)  # each seed asks for the caption of one real scene
        S.pos, S.neg = bm.caption_cond(caption), null_cond(n)
        real = scenes.render(real_sc, *target)
        real_ref = scenes.render(scenes.sample_scenes(max(n, 64), 20_000 + seed, aspect), *target)
        base_lat, t_base = timed(S.base, n, base_hw, seed)
        base_img = scenes.from_latent(base_lat)
        base_counts += rep_counts(base_img)
        lat, times = {}, {}
        if "baselines" in args.groups:
            lat[DIRECT], times[DIRECT] = timed(S.direct, n, target, seed)
            lat[HIRES], times[HIRES] = timed(S.hires, base_lat, target, seed)
            lat[TF], times[TF] = timed(S.cascade, base_lat, base_hw, target, seed)
        for row, ups in sets.items():
            lat[row], times[row] = timed(S.cascade, base_lat, base_hw, target, seed, ups)
        for sch in schedules:
            lat[k_row(sch)], times[k_row(sch)] = timed(S.cascade, base_lat, base_hw, target, seed, None,
                                                       K=sch[0], K_later=sch[1])
        common = dict(base_img=base_img, real=real, real_ref=real_ref, seed=seed, caption=caption)
        images = {k: scenes.from_latent(v) for k, v in lat.items()}
        for row, img in images.items():
            uses_base = row in USES_BASE or row.startswith("T ") or row.startswith("TF ")
            t = times[row] if row == DIRECT else tuple(a + b for a, b in zip(times[row], t_base, strict=True))
            per_row.setdefault(row, []).append(score_set(img, uses_base=uses_base, times=t, **common))
        per_row.setdefault("Base sample", []).append(score_set(base_img, uses_base=False, fidelity=False, **common))
        if si == 0:
            grid = [("real", real), ("base (bicubic)", torch.nn.functional.interpolate(
                base_img.movedim(-1, 1), size=target, mode="bicubic").movedim(1, -1).clamp(0, 1))]
            grid += list(images.items())
        print(f"    {name} seed set {seed} done", flush=True)
    grid_path = Path(args.out) / f"grid_{name}.png"
    rep.save_grid(grid_path, grid, args.grid_cols)
    k = sum(c == 1 for c in base_counts)
    return {"base": base_hw, "target": target, "samples_per_set": n, "seed_sets": args.seed_sets,
            "base_composition": k / len(base_counts), "grid": grid_path.name, "grid_rows": [r for r, _ in grid],
            "stages": len(stage_sizes(base_hw, target)),
            "executed_steps": rr.executed_steps(S.model, args.steps, len(stage_sizes(base_hw, target)),
                                                [(700.0, 700.0), *args.k_schedules]),
            "rows": {r: pool(v) for r, v in per_row.items()}, "per_set": per_row}


def rep_counts(img: torch.Tensor) -> list[int]:
    from .metrics import count_objects

    return count_objects(img)


def parse_schedule(s: str) -> tuple[float, float]:
    a, b = s.split("/")
    return float(a), float(b)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", default="recipes")
    ap.add_argument("--quick", action="store_true", help="2 samples, one seed set, 2 training steps, 8 sampler steps (CI)")
    ap.add_argument("--targets", nargs="*", default=["4x", "16x"], choices=list(TARGETS),
                    help="none: train (and --save-sets) only")
    ap.add_argument("--samples", type=int, default=16, help="samples per seed set")
    ap.add_argument("--seed-sets", type=int, nargs="+", default=[0, 1000, 2000])
    ap.add_argument("--steps", type=int, default=20, help="sampler steps (schedule length) of every call")
    ap.add_argument("--cfg", type=float, default=5.0, help="cfg of every row and of the generated pivots "
                    "(5: chosen on seed sets 5000 / 6000, docs/BENCHMARK.md)")
    ap.add_argument("--recipes", nargs="*", default=list(tr.RECIPES), choices=list(tr.RECIPES))
    ap.add_argument("--official", nargs="*", default=[], choices=list(tr.RECIPES),
                    help="recipes that also get the official-size set")
    ap.add_argument("--budget", type=int, default=200, help="T training steps (the trained rows' budget)")
    ap.add_argument("--train-images", type=int, default=128, help="renders per size (32 and 64 px)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-4, help="upsampler learning rate (recipe_sweep.py's pick)")
    ap.add_argument("--caption-dropout", type=float, default=0.1)
    ap.add_argument("--variant", default="light")
    ap.add_argument("--variant-size", type=int, default=32)
    ap.add_argument("--k-schedules", type=parse_schedule, nargs="*",
                    default=[(700.0, 600.0), (600.0, 600.0), (700.0, 500.0)],
                    help="per-stage K as FIRST/LATER (TF rows at the multi-stage targets)")
    ap.add_argument("--k-targets", nargs="*", default=["16x", "64x"], help="targets with the per-stage K rows")
    ap.add_argument("--grid-cols", type=int, default=6)
    ap.add_argument("--weights", default=str(bm.CAPTION_WEIGHTS), help="the captioned base model")
    ap.add_argument("--out", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--groups", nargs="+", default=list(GROUPS), choices=list(GROUPS),
                    help="row groups to sample (a run split across processes; --merge joins them)")
    ap.add_argument("--save-sets", type=Path, default=None, help="save every trained set here (index.json)")
    ap.add_argument("--load-sets", type=Path, nargs="*", default=[], help="use the sets saved by --save-sets runs")
    ap.add_argument("--merge", type=Path, nargs="+", default=None,
                    help="only pool these runs' results (same rows, other seed sets) into --out")
    args = ap.parse_args(argv)
    command = "python benchmark/recipes.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.merge:
        return merge(Path(args.out or REPO / "benchmark" / "results" / args.name), args.merge, command)
    if args.quick:
        args.samples, args.seed_sets, args.steps, args.budget, args.train_images = 2, args.seed_sets[:1], 8, 2, 4
    args.out = args.out or str(REPO / "benchmark" / "results" / args.name)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    import comfy.utils

    comfy.utils.PROGRESS_BAR_ENABLED = False
    t0 = time.perf_counter()
    model = bm.load_base_model(args.weights)
    if not hasattr(model.model, "encode_adm") or not bm.is_captioned(model.model.diffusion_model.state_dict()):
        raise SystemExit(f"{args.weights} is not the captioned base model (benchmark/train_base.py --caption)")
    S = Sampling(model, null_cond(1), null_cond(1), args.steps, cfg=args.cfg)
    with tempfile.TemporaryDirectory(prefix="recipes_") as tmp:
        sets, info = train_sets(S, args, Path(tmp))
    t_train = time.perf_counter() - t0
    print(f"[{t_train:.0f}s] trained", flush=True)
    if not args.targets:
        return {"training": info}
    results = {name: evaluate_target(S, name, args, sets) for name in args.targets}
    total = time.perf_counter() - t0
    return write(Path(args.out), results, info, command, vars(args), total, t_train)


def write(out: Path, results: dict, info: dict, command: str, args: dict, total: float, t_train: float) -> dict:
    verdicts = rr.verdicts(results, FRESH, TF)
    rr.write_table(out / "table.md", results, verdicts, info, command, args, total, t_train)
    (out / "results.json").write_text(json.dumps(
        {"command": command, "total_seconds": round(total, 1), "training_seconds": round(t_train, 1),
         "training": info, "verdicts": verdicts, "args": {k: str(v) for k, v in args.items()},
         "results": results}, indent=1, default=str))
    (out / "command.txt").write_text(command + f"\n# total wall time {total:.0f} s\n")
    print((out / "table.md").read_text())
    return {"results": results, "verdicts": verdicts}


def merge(out: Path, parts: list[Path], command: str) -> dict:
    """One table from runs of the same settings split across processes by seed set and/or row
    group: every row's raw per-set scores are joined (one per seed set, ordered by seed), pooled
    again and the verdicts recomputed; times are the parts' sums."""
    runs = [json.loads((p / "results.json").read_text()) for p in parts]
    results: dict = {}
    for run in runs:
        for name, res in run["results"].items():
            tgt = results.setdefault(name, {**res, "per_set": {}, "base_counts": {}})
            tgt["base_counts"].update({str(s["seed"]): s["counts"] for s in res["per_set"]["Base sample"]})
            for row, sets in res["per_set"].items():
                tgt["per_set"].setdefault(row, {}).update({s["seed"]: s for s in sets})
    for res in results.values():
        res["per_set"] = {r: [v[k] for k in sorted(v)] for r, v in res["per_set"].items()}
        res["rows"] = {r: pool(v) for r, v in res["per_set"].items()}
        res["seed_sets"] = sorted(s["seed"] for s in res["per_set"]["Base sample"])
        counts = [c for v in res.pop("base_counts").values() for c in v]
        res["base_composition"] = sum(c == 1 for c in counts) / len(counts)
    args = dict(runs[0]["args"])
    args.update(seed_sets=sorted({s for res in results.values() for s in res["seed_sets"]}),
                samples=int(args["samples"]), steps=int(args["steps"]), cfg=float(args["cfg"]),
                budget=int(args["budget"]), batch=int(args["batch"]), lr=float(args["lr"]),
                caption_dropout=float(args["caption_dropout"]))
    info = {k: v for run in runs for k, v in run["training"].items()}
    out.mkdir(parents=True, exist_ok=True)
    command = command + "  # joining: " + "; ".join(r["command"] for r in runs)
    return write(out, results, info, command, args, sum(r["total_seconds"] for r in runs),
                 sum(r["training_seconds"] for r in runs))
