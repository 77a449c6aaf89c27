"""The benchmark's outputs: markdown table (with the goals judged from the numbers), grids, plots."""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch

from . import plots
from .scoring import paired_iou_gain

GOAL_POINTS = 0.10  # TF at K=700 within 10 points of the base composition
STEP_RATIO = 5  # T reaches full fine-tuning's best quality in at most 1/5 of its steps


def save_grid(path: Path, rows: list[tuple[str, torch.Tensor]], cols: int) -> None:
    """Rows = methods (table order), columns = the first ``cols`` seeds of the first seed set."""
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
    """'-' only where there is no value; non-finite values print as nan/inf."""
    return "-" if v is None else format(v, spec)


def _ci(r: dict, key: str) -> str:
    if key not in r:
        return "n/a"
    lo, hi = r[key + "_ci"]
    return f"{r[key]:.2f} [{lo:.2f}, {hi:.2f}]"


def _sets(r: dict, key: str, spec: str = ".2f") -> str:
    return " / ".join(format(v, spec) for v in r.get(key + "_sets", []))


def plot_k_sweep(path: Path, name: str, sweep: dict) -> None:
    ks = sorted(sweep)
    plots.plot(path, [
        {"title": f"{name}: composition (exact count)", "series": {"TF": [(k, sweep[k]["composition"]) for k in ks]},
         "y_range": (0.0, 1.0)},
        {"title": f"{name}: pivot agreement (IoU)", "series": {"TF": [(k, sweep[k]["pivot_iou"]) for k in ks]},
         "y_range": (0.0, 1.0)},
        {"title": f"{name}: SWD fine (x1e3, lower better)", "series": {"TF": [(k, sweep[k]["swd_fine"]) for k in ks]}},
    ], "K (timestep of 1000)")


def plot_steps(path: Path, name: str, steps: dict) -> None:
    def series(key):
        # step 0 (untrained) is in the table; the log axis starts at the first budget
        return {m: [(b, r[key]) for b, r in sorted(d.items()) if key in r and b > 0] for m, d in steps.items()}

    plots.plot(path, [
        {"title": f"{name}: SWD fine (x1e3, lower better)", "series": series("swd_fine")},
        {"title": f"{name}: SWD coarse (x1e3, lower better)", "series": series("swd_coarse")},
        {"title": f"{name}: composition", "series": series("composition"), "y_range": (0.0, 1.0)},
        {"title": f"{name}: stripes (x real; 1 = real)", "series": series("stripes")},
    ], "training steps (log)", log_x=True)


#: Quality measures of the steps-to-quality comparison: key -> score (lower is better). Stripes (the
#: scenes' own high-res texture, metrics.stripe_energy; grain does not count) are judged by their
#: distance to the real renders' 1.0.
STEP_METRICS: dict[str, Callable[[float], float]] = {
    "composition": lambda v: -v, "swd_fine": lambda v: v, "swd_coarse": lambda v: v, "stripes": lambda v: abs(v - 1.0)}


def steps_claim(steps: dict, key: str, score: Callable[[float], float] | None = None) -> dict:
    """Full fine-tuning's best ``key`` over its trained budgets, T's first trained budget reaching it, and
    whether that best is a gain over fine-tuning's step 0 (the untrained base; without a gain the
    comparison says nothing about training speed). ``score``: lower is better (default STEP_METRICS)."""
    score = score or STEP_METRICS[key]
    ft = {b: r for b, r in steps["Full fine-tuning"].items() if b > 0}
    best_step = min(ft, key=lambda b: (score(ft[b][key]), b))
    best = ft[best_step][key]
    reach = [b for b in sorted(steps["T"]) if b > 0 and score(steps["T"][b][key]) <= score(best)]
    t_step = reach[0] if reach else None
    start = steps["Full fine-tuning"].get(0, {}).get(key)
    learned = start is None or score(best) < score(start)
    return {"metric": key, "ft_best": best, "ft_best_step": best_step, "t_step": t_step, "ft_start": start,
            "ft_learned": learned, "met": t_step is not None and t_step * STEP_RATIO <= best_step}


def goals(results: dict) -> list[str]:
    """The issue's goals, judged from the numbers of this run."""
    out = []
    for name in ("4x", "16x", "64x"):
        if name not in results:
            continue
        res = results[name]
        tf, base = res["rows"]["Self-Cascade TF (K=700)"]["composition"], res["base_composition"]
        out.append(f"- TF at K=700 keeps composition within {GOAL_POINTS * 100:.0f} points of base at {name}: "
                   f"{'MET' if tf >= base - GOAL_POINTS - 1e-9 else 'MISSED'} (TF {tf:.2f}, base {base:.2f}).")
    for name, res in results.items():
        rows = res["rows"]
        t, fresh, tf = rows["Self-Cascade T (trained)"], rows["Self-Cascade T, untrained (fresh set)"], \
            rows["Self-Cascade TF (K=700)"]
        swd = t["swd_fine"] < min(fresh["swd_fine"], tf["swd_fine"])
        iou = t["pivot_iou"] > max(fresh["pivot_iou"], tf["pivot_iou"])
        sets = sum(a < min(b, c) for a, b, c in zip(t["swd_fine_sets"], fresh["swd_fine_sets"], tf["swd_fine_sets"],
                                                    strict=True))
        paired, iou_sure = "", False
        if "pivot_iou_values" in t:  # same seeds: the paired gain and its interval decide "beats", not luck
            gains = {k: paired_iou_gain(t, r) for k, r in (("fresh", fresh), ("TF", tf))}
            paired = "; paired IoU gain " + ", ".join(
                f"vs {k} {g:+.3f} [{lo:+.3f}, {hi:+.3f}]" for k, (g, (lo, hi)) in gains.items())
            iou_sure = all(lo > 0 for _, (lo, _) in gains.values())
            paired += " (interval above 0 for both)" if iou_sure else " (an interval includes 0)"
        # MET: a win that holds beyond noise (fine SWD best in every seed set, or both paired IoU intervals
        # above 0); NOT SHOWN: better point estimates only; MISSED: not even that
        verdict = ("MET" if sets == len(t["swd_fine_sets"]) or iou_sure else
                   "NOT SHOWN (point estimate only, within noise)" if swd or iou else "MISSED")
        out.append(f"- {name}: trained T beats untrained T and TF on fine SWD or pivot agreement: "
                   f"{verdict} (fine SWD T {t['swd_fine']:.1f} / fresh {fresh['swd_fine']:.1f}"
                   f" / TF {tf['swd_fine']:.1f}, T best in {sets} of {len(t['swd_fine_sets'])} seed sets; pivot IoU T "
                   f"{t['pivot_iou']:.2f} / fresh {fresh['pivot_iou']:.2f} / TF {tf['pivot_iou']:.2f}{paired}).")
        if res["steps"]:
            for key in STEP_METRICS:
                c = steps_claim(res["steps"], key)
                t_at = f"step {c['t_step']}" if c["t_step"] is not None else "not within the budget"
                start = "" if c["ft_start"] is None else f"; fine-tuning's step 0 (the base model): {c['ft_start']:.2f}"
                verdict = "MET" if c["met"] else "MISSED"
                if not c["ft_learned"]:  # its "best" is no better than the untrained base: nothing to compare
                    verdict, start = "NOT TESTABLE", start + ", never beaten by fine-tuning"
                elif c["ft_best_step"] < STEP_RATIO * min(b for b in res["steps"]["T"] if b > 0):
                    verdict = "NOT TESTABLE"  # 1/STEP_RATIO of fine-tuning's steps is before T's first budget
                    start += f"; 1/{STEP_RATIO} of step {c['ft_best_step']} is before T's first budget"
                out.append(f"- {name}: T reaches full fine-tuning's best {key} ({c['ft_best']:.2f}, at step "
                           f"{c['ft_best_step']}) in at most 1/{STEP_RATIO} of its steps: "
                           f"{verdict} (T reaches it at {t_at}{start}).")
    return out


def write_table(path: Path, results: dict, training: dict, command: str, args: dict, total: float,
                t_train: float) -> None:
    lines = ["# Self-Cascade benchmark (miniature: a ~1 M-parameter pixel-space UNet on procedural scenes, not SD)",
             "", f"Command: `{command}`", "",
             f"Total wall time {total:.0f} s (training {t_train:.0f} s), {args['threads']} threads. Seed sets "
             f"{args['seed_sets']} x {args['samples']} samples; sampler euler/normal, {args['steps']} steps, "
             f"cfg {args.get('cfg', 1.0):g}"
             + (f" (captioned model {Path(args['weights']).name}: each seed asks for one real scene's caption)."
                if args.get("caption") else "."),
             "", "## Goals (judged from this run's numbers)", "", *goals(results), ""]
    for name, res in results.items():
        (bh, bw), (th, tw) = res["base"], res["target"]
        lo, hi = res["base_composition_ci"]
        n = res["samples_per_set"] * len(res["seed_sets"])
        lines += [f"## {name}: {bh}x{bw} -> {th}x{tw} (HxW), {n} samples ({len(res['seed_sets'])} seed sets); "
                  f"base composition {res['base_composition']:.2f} [{lo:.2f}, {hi:.2f}]", "",
                  "| Method | Composition [95% CI] | per seed set | Pivot IoU [95% CI] | SWD coarse (x1e3) "
                  "| SWD fine (x1e3) | SWD fine per set | Base consistency | Detail (x real) | Stripes (x real) "
                  "| Wall vs direct | CPU vs direct |", "|" + "---|" * 12]
        direct = res["rows"]["Direct"]
        for row, r in res["rows"].items():
            wall = r["seconds"] / direct["seconds"] if "seconds" in r else None
            cpu = r["cpu_seconds"] / direct["cpu_seconds"] if "cpu_seconds" in r else None
            lines.append(f"| {row} | {_ci(r, 'composition')} | {_sets(r, 'composition')} | {_ci(r, 'pivot_iou')} | "
                         f"{fmt(r.get('swd_coarse'), '.1f')} | {fmt(r.get('swd_fine'), '.1f')} | "
                         f"{_sets(r, 'swd_fine', '.0f')} | {fmt(r.get('base_consistency'), '.1f')} | "
                         f"{fmt(r.get('detail'))} | {fmt(r.get('stripes'))} | {fmt(wall)} | {fmt(cpu)} |")
        missing = [r for r in ("Full fine-tuning (direct at target)", "LoRA (direct at target)") if r not in res["rows"]]
        if missing:
            lines.append(f"\n{', '.join(missing)}: not trained for this target (this run's --ft-targets: "
                         f"{args['ft_targets']}).")
        lines += ["", f"Grid: `{res['grid']}` (rows = methods in table order, columns = seed set {res['seed_sets'][0]}).",
                  ""]
        if res["k_sweep"]:
            lines += [f"### {name}: TF K sweep (`k_sweep_{name}.png`)", "",
                      "| K | Composition [95% CI] | Pivot IoU [95% CI] | SWD coarse | SWD fine | Base consistency |",
                      "|---|---|---|---|---|---|"]
            for K, r in sorted(res["k_sweep"].items()):
                lines.append(f"| {K:.0f} | {_ci(r, 'composition')} | {_ci(r, 'pivot_iou')} | {r['swd_coarse']:.1f} | "
                             f"{r['swd_fine']:.1f} | {r['base_consistency']:.1f} |")
            lines.append("")
        if res["strength_sweep"]:
            lines += [f"### {name}: untrained (fresh) set, strength sweep (TF = strength 0)", "",
                      "| strength | Composition [95% CI] | Pivot IoU [95% CI] | SWD coarse | SWD fine | Base consistency |",
                      "|---|---|---|---|---|---|"]
            tf = res["rows"]["Self-Cascade TF (K=700)"]
            for s, r in [(0.0, tf), *sorted(res["strength_sweep"].items())]:
                lines.append(f"| {s:g} | {_ci(r, 'composition')} | {_ci(r, 'pivot_iou')} | {r['swd_coarse']:.1f} | "
                             f"{r['swd_fine']:.1f} | {r['base_consistency']:.1f} |")
            lines.append("")
        if res["steps"]:
            lines += [f"### {name}: steps to quality (`steps_to_quality_{name}.png`); same budgets, batch, images", "",
                      "Step 0 = untrained (T: the fresh set; FT and LoRA: the base model, i.e. Direct). Per method: "
                      "composition / SWD coarse / SWD fine / detail / stripes (T also pivot IoU).", "",
                      "| steps | T comp | T pivot IoU | T SWD coarse | T SWD fine | T detail | T stripes | FT comp "
                      "| FT SWD coarse | FT SWD fine | FT detail | FT stripes | LoRA comp | LoRA SWD coarse "
                      "| LoRA SWD fine | LoRA detail | LoRA stripes |",
                      "|" + "---|" * 17]
            st = res["steps"]
            for b in sorted(st["T"]):
                t = st["T"][b]
                cells = [f"{b}", f"{t['composition']:.2f}", f"{t['pivot_iou']:.2f}"]
                for r in (t, st["Full fine-tuning"][b], st["LoRA"][b]):
                    if r is not t:
                        cells.append(f"{r['composition']:.2f}")
                    cells += [f"{r['swd_coarse']:.1f}", f"{r['swd_fine']:.1f}", fmt(r.get("detail")),
                              fmt(r.get("stripes"))]
                lines.append("| " + " | ".join(cells) + " |")
            lines.append("")
    lines += ["## Training", ""] + [f"- {k}: `{json.dumps(v)}`" for k, v in training.items()]
    lines += ["", "Composition: exact object count, counted at the base size (area-downsampled: resize-invariant), "
              "Wilson 95% interval. Pivot IoU: object layout at the base size against the base sample's, bootstrap "
              "95% interval; n/a for rows that do not start from the base sample. SWD: mean over the seed sets, lower "
              "is better. Detail 1.0 = as much above-base-Nyquist energy inside objects as real renders (grain counts); "
              "Stripes 1.0 = as much of the scenes' own stripe texture there as real renders (grain does not). Times sum "
              "the seed sets and include the base stage where a row needs it (reference rows are not methods)."]
    path.write_text("\n".join(lines) + "\n")
