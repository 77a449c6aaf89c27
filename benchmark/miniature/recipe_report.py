"""Verdicts and table of recipes.py, by the decision rule written in docs/BENCHMARK.md before the run.

Recipe R against the fresh set (per target): MET when R's paired same-seed pivot-IoU gain over the
fresh set and over TF both have 95% intervals above 0, or R's fine SWD is below both in every seed
set, and R's composition is within 10 points of the fresh set's; NOT SHOWN when only the point
estimates are better; MISSED otherwise. Per-stage K schedule S against K=700 everywhere: as good
when the paired per-sample difference (pivot IoU and one-object composition) has an interval whose
upper end reaches 0; cheaper when it executes fewer high-res steps.
"""
from __future__ import annotations

from pathlib import Path

from .report import fmt
from .scoring import paired_gain

COMPOSITION_POINTS = 0.10


def executed_steps(model, steps: int, stages: int, schedules: list[tuple[float, float]]) -> dict:
    """{"K1/K2": high-res sampler steps per sample over all stages} from the schedule cut at K."""
    from ...nodes.timesteps import cascade_sigmas

    def n(k: float) -> int:
        return len(cascade_sigmas(model, k, steps, "normal")[1]) - 1

    return {f"{a:g}/{b:g}": n(a) + (stages - 1) * n(b) for a, b in schedules}


def recipe_verdict(r: dict, fresh: dict, tf: dict) -> dict:
    g_f, ci_f = paired_gain(r, fresh, "pivot_iou_values")
    g_t, ci_t = paired_gain(r, tf, "pivot_iou_values")
    swd_sets = [a < b and a < c for a, b, c in zip(r["swd_fine_sets"], fresh["swd_fine_sets"], tf["swd_fine_sets"],
                                                    strict=True)]
    comp_ok = r["composition"] >= fresh["composition"] - COMPOSITION_POINTS - 1e-9
    if comp_ok and ((ci_f[0] > 0 and ci_t[0] > 0) or all(swd_sets)):
        verdict = "MET"
    elif g_f > 0 or r["swd_fine"] < fresh["swd_fine"]:
        verdict = "NOT SHOWN"
    else:
        verdict = "MISSED"
    return {"verdict": verdict, "iou_gain_fresh": g_f, "iou_gain_fresh_ci": ci_f, "iou_gain_tf": g_t,
            "iou_gain_tf_ci": ci_t, "swd_best_sets": sum(swd_sets), "composition_ok": comp_ok}


def schedule_verdict(s: dict, ref: dict, steps: int, ref_steps: int) -> dict:
    g_i, ci_i = paired_gain(s, ref, "pivot_iou_values")
    g_c, ci_c = paired_gain(s, ref, "composition_values")
    good = ci_i[1] >= 0 and ci_c[1] >= 0
    return {"as_good": good, "cheaper": steps < ref_steps, "iou_diff": g_i, "iou_diff_ci": ci_i,
            "composition_diff": g_c, "composition_diff_ci": ci_c, "steps": steps, "ref_steps": ref_steps}


def verdicts(results: dict, fresh: str, tf: str) -> dict:
    """Every trained row ("T ...") against the fresh set and TF, every per-stage K row ("TF K a/b")
    against TF (K=700 everywhere), per target."""
    out: dict = {"recipes": {}, "schedules": {}}
    for name, res in results.items():
        rows, steps = res["rows"], res["executed_steps"]
        if fresh not in rows or tf not in rows:  # one part of a split run: verdicts after --merge
            out["recipes"][name], out["schedules"][name] = {}, {}
            continue
        out["recipes"][name] = {r: recipe_verdict(rows[r], rows[fresh], rows[tf])
                                for r in rows if r.startswith("T ") and r != fresh}
        out["schedules"][name] = {r: schedule_verdict(rows[r], rows[tf], steps[r.removeprefix("TF K ")],
                                                      steps["700/700"])
                                  for r in rows if r.startswith("TF K ")}
    return out


def _ci(v: float, ci) -> str:
    return f"{v:+.3f} [{ci[0]:+.3f}, {ci[1]:+.3f}]"


def write_table(path: Path, results: dict, verdicts: dict, training: dict, command: str, args: dict,
                total: float, t_train: float) -> None:
    lines = ["# Training recipes and per-stage K on the captioned miniature (not Stable Diffusion)", "",
             f"Command: `{command}`", "",
             f"Seed sets {args['seed_sets']} x {args['samples']} samples; euler/normal, {args['steps']} steps, "
             f"cfg {args['cfg']:g} (null caption as the negative) on every row; T budget {args['budget']} steps, "
             f"batch {args['batch']}, lr {args['lr']:g}, caption dropout {args['caption_dropout']:g}. "
             f"Wall time {total:.0f} s (training {t_train:.0f} s).", "",
             "Rule (docs/BENCHMARK.md, committed before the run): MET = paired IoU gain over the fresh set and "
             "over TF both with intervals above 0, or fine SWD below both in every seed set (composition within "
             "10 points of the fresh set's); NOT SHOWN = point estimates only; MISSED = neither.", ""]
    for name, res in results.items():
        rows = res["rows"]
        lines += [f"## {name}: {res['base']} -> {res['target']} ({res['stages']} stage(s)); base composition "
                  f"{res['base_composition']:.2f}", "",
                  "| row | composition [95%] | per set | pivot IoU | fine SWD (per set) | base consistency "
                  "(FID_b analogue) | stripes | caption colour | CPU s |", "|---|---|---|---|---|---|---|---|---|"]
        for r, p in rows.items():
            lo, hi = p["composition_ci"]
            sets = " / ".join(f"{v:.2f}" for v in p["composition_sets"])
            swd = f"{fmt(p.get('swd_fine'), '.1f')} ({' / '.join(f'{v:.0f}' for v in p.get('swd_fine_sets', []))})"
            lines.append(f"| {r} | {p['composition']:.2f} [{lo:.2f}, {hi:.2f}] | {sets} | {fmt(p.get('pivot_iou'))} | "
                         f"{swd} | {fmt(p.get('base_consistency'), '.0f')} | {fmt(p.get('stripes'), '.3f')} | "
                         f"{fmt(p.get('caption_match'))} | {fmt(p.get('cpu_seconds'), '.0f')} |")
        lines += ["", "| recipe | verdict | paired IoU gain over fresh | over TF | fine SWD best in sets |",
                  "|---|---|---|---|---|"]
        for r, v in verdicts["recipes"][name].items():
            lines.append(f"| {r} | **{v['verdict']}** | {_ci(v['iou_gain_fresh'], v['iou_gain_fresh_ci'])} | "
                         f"{_ci(v['iou_gain_tf'], v['iou_gain_tf_ci'])} | {v['swd_best_sets']} of "
                         f"{len(res['seed_sets'])} |")
        if verdicts["schedules"].get(name):
            lines += ["", "| per-stage K vs 700/700 | high-res steps | paired IoU diff | paired composition diff | "
                      "as good | cheaper |", "|---|---|---|---|---|---|"]
            for r, v in verdicts["schedules"][name].items():
                lines.append(f"| {r} | {v['steps']} vs {v['ref_steps']} | {_ci(v['iou_diff'], v['iou_diff_ci'])} | "
                             f"{_ci(v['composition_diff'], v['composition_diff_ci'])} | {'yes' if v['as_good'] else 'no'}"
                             f" | {'yes' if v['cheaper'] else 'no'} |")
        lines += ["", f"Grid (first seed set; rows: {', '.join(res['grid_rows'])}): `{res['grid']}`", ""]
    lines += ["## Training", "", "| row | method | seconds | loss first 10 / last 10 |", "|---|---|---|---|"]
    for r, i in training.items():
        lines.append(f"| {r} | {i['method']}, {i['params']} params | {i['seconds']} | {i['loss_first10']} / "
                     f"{i['loss_last10']} |")
    path.write_text("\n".join(lines) + "\n")
