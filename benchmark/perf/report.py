"""The suite's report: goals checked against measured rows only, and ``table.md`` from ``results.json``."""
from __future__ import annotations

import math

#: (what, limit): time ratios to direct at the target, memory ratio, training ratios vs full fine-tuning.
GOALS = {"tf_time": 0.85, "t_time": 0.90, "mem": 1.05, "train_speedup": 2.0, "train_memory": 3.0}
GOAL_TEXT = ("TF <= 0.85x and T <= 0.90x direct time at the target; peak memory <= 1.05x direct; "
             "at SDXL 1024 the upsamplers' training step >= 2x faster and >= 3x less peak memory than full "
             "fine-tuning")


def _f(x, fmt=".3f", unit: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return format(x, fmt) + unit


def _verdict(value, limit: float, at_most: bool) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "not measured"
    ok = value <= limit if at_most else value >= limit
    if ok:
        return "met"
    return f"missed by {abs(value - limit):.3f}"


def _why(r: dict) -> str:
    """Where the time ratio comes from, from the row's own figures: the FLOP limit of its executed UNet work,
    what the measured per-call times add to it (per-call costs not proportional to FLOPs: kernel launches
    and low utilisation at the small stages), and what is spent outside the plain UNet steps (sampler
    set-up, pivot resize and renoise, the tuned rows' pivot pass and upsamplers)."""
    fl, tm, ratio = r.get("ideal_flops"), r.get("ideal_time"), r.get("ratio")
    if fl is None or tm is None or ratio is None:
        return "no ideal ratio"
    return (f"FLOP limit {fl:.3f}x, {tm - fl:+.3f} from per-call time at the small stages, "
            f"{ratio - tm:+.3f} outside plain UNet steps")


def goals(res: dict) -> list[str]:
    """One line per goal and measured row: the figure, the limit, met / missed by how much."""
    lines = []
    for fam, rows in res["inference"].items():
        by = {r["name"]: r for r in rows if r.get("status") == "done"}
        for name, key in (("tf_cascade", "tf_time"), ("t_official", "t_time"), ("t_light", "t_time")):
            if name in by:
                r = by[name]
                ratio, mem = r.get("ratio"), r.get("mem_ratio")
                lines.append(f"{fam} {name}: time {_f(ratio, unit='x')} direct (goal <= {GOALS[key]}x: "
                             f"{_verdict(ratio, GOALS[key], True)}; {_why(r)}); "
                             f"peak memory {_f(mem, unit='x')} (goal <= {GOALS['mem']}x: {_verdict(mem, GOALS['mem'], True)})")
    for r in res["training"]:
        if r.get("status") == "done" and r["family"] == "sdxl" and r["method"] in ("official", "light"):
            sp, mem = r.get("speedup_vs_full"), r.get("memory_vs_full")
            lines.append(f"sdxl training {r['method']} (checkpointing {'on' if r['checkpointing'] else 'off'}): "
                         f"{_f(sp, '.2f', 'x')} faster than full FT (goal >= {GOALS['train_speedup']}x: "
                         f"{_verdict(sp, GOALS['train_speedup'], False)}), {_f(mem, '.2f', 'x')} less peak memory "
                         f"(goal >= {GOALS['train_memory']}x: {_verdict(mem, GOALS['train_memory'], False)})")
    return lines or ["no goal row was measured"]


def _status(r: dict) -> str:
    s = r.get("status", "")
    return s if s == "done" else f"**{s}**: {r.get('note') or r.get('error', '')}"


def _profile_rows(rows: list[dict]) -> list[str]:
    """``--profile``: per row the GPU's busy time and idle share; per sampling call s, UNet calls, ms/call."""
    prof = [r for r in rows if r.get("profile")]
    if not prof:
        return []
    out = ["", "Profile (`--profile`; details in profile.txt): GPU busy = union of the device's kernel and copy "
           "intervals in a profiled run of the row; idle = 1 - busy / wall (wall of the timed run).", "",
           "| row | wall s | GPU busy s | idle | per sampling call: latent, s, UNet calls, ms/call |", "|---|---|---|---|---|"]
    for r in prof:
        p = r["profile"]
        calls = "; ".join(f"{c['latent'][0]}x{c['latent'][1]}: {c['wall_s']:.3f} s, {c['unet_calls']}, "
                          f"{c['ms_per_call']:.1f}" for c in p["sampling_calls"])
        out.append(f"| {r['name']} | {p['wall_s']:.3f} | {p['device_busy_s']:.3f} | {100 * p['idle_share']:.1f}% | "
                   f"{calls} |")
    return out


def table(res: dict) -> str:
    m = res["meta"]
    out = []
    if m["smoke"]:
        out.append("> **SMOKE RUN** (CPU, tiny models): checks that every code path runs; its figures say "
                   "nothing about real-size cost.\n")
    out += [f"# Performance suite: {m['device_name']}", "",
            f"Command: `{m['command']}`  ", f"Date: {m['date']}; suite wall time {m['wall_s']:.0f} s "
            f"(budget {m['budget_s']:.0f} s)  ",
            f"torch {m['torch']} (CUDA {m['cuda']}), ComfyUI {m['comfyui']}, Python {m['python']}, "
            f"commit {m['commit']}  ",
            f"dtypes: {m['dtypes']}  ",
            f"Settings: {m['settings']}", "",
            f"Goals (reported against, measured rows only): {GOAL_TEXT}.", ""]
    out += [f"- {line}" for line in goals(res)]
    budget = [i for i in res["budget"]["items"] if i["status"] in ("dropped", "skipped")]
    out += ["", "Budget: " + ("every planned row ran." if not budget else
                              f"{len(budget)} row(s) not run, most expensive first:")]
    out += [f"- {i['key']}: {i['status']} ({i['note']})" for i in budget]
    for fam, rows in res["inference"].items():
        fi = res["families"][fam]
        out += ["", f"## 1. Inference, {fi['label']}: {' -> '.join(str(p) for p in fi['px'])} px", "",
                "Ideal x: the limit from the executed UNet calls alone (calls x cost per call at each size, "
                "relative to direct), by FLOP count and by the measured time per call.", "",
                "| row | wall s | x direct | UNet calls (per latent side) | ideal x (FLOPs) | ideal x (s/call) | "
                "peak MiB | x mem | status |", "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            calls = ", ".join(f"{k}: {v}" for k, v in r.get("calls_by_side", {}).items())
            out.append(f"| {r['name']} | {_f(r.get('wall_s'))} | {_f(r.get('ratio'))} | {r.get('calls', '')} "
                       f"({calls}) | {_f(r.get('ideal_flops'))} | {_f(r.get('ideal_time'))} | "
                       f"{_f(r.get('peak_mib'), '.0f')} | {_f(r.get('mem_ratio'))} | {_status(r)} |")
        out += _profile_rows(rows)
        out += ["", "| latent side | GFLOP per UNet call (batch 2) | measured s per call |", "|---|---|---|"]
        for side, fl in fi["flops"].items():
            out.append(f"| {side} | {fl / 1e9:.1f} | {_f(fi['seconds_per_call'].get(side), '.4f')} |")
    out += ["", "## 2. Upsampler overhead per sampling step (patch on at every step)", "",
            "| model | latent side | row | params | s/step | x plain | pivot pass s | pivot share | "
            "upsampler share | peak MiB | x mem | status |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for fam, rows in res["overhead"].items():
        for r in rows:
            out.append(f"| {fam} | {r.get('side', '')} | {r.get('name', '')} | {r.get('params', '')} | "
                       f"{_f(r.get('s_per_step'), '.4f')} | {_f(r.get('ratio'))} | {_f(r.get('pivot_s'), '.4f')} | "
                       f"{_f(r.get('pivot_share'))} | {_f(r.get('upsampler_share'))} | {_f(r.get('peak_mib'), '.0f')} | "
                       f"{_f(r.get('mem_ratio'))} | {_status(r)} |")
    out += ["", "## 3. Training step (batch 1, bf16 autocast, AdamW)", "",
            "Peak: CUDA memory from before the row's model was built (resident before: what other rows left "
            "allocated, ~0 when rows release everything).", "",
            "| model | latent side | method | trainable params | checkpointing | s/step | full FT s / this s | "
            "peak MiB | full FT peak / this peak | resident before MiB | status |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["training"]:
        name = f"lora r{r['rank']}" if r["method"] == "lora" else r["method"]
        out.append(f"| {r['family']} | {r['side']} | {name} | {r.get('trainable', '')} | "
                   f"{'on' if r['checkpointing'] else 'off'} | {_f(r.get('s_per_step'), '.4f')} | "
                   f"{_f(r.get('speedup_vs_full'), '.2f')} | {_f(r.get('peak_mib'), '.0f')} | "
                   f"{_f(r.get('memory_vs_full'), '.2f')} | {_f(r.get('resident_mib'), '.0f')} | {_status(r)} |")
    if res["errors"]:
        out += ["", "## Errors (rows that failed; the suite went on)", ""]
        out += [f"- {e['key']}: {e['error']}" for e in res["errors"]]
    return "\n".join(out) + "\n"
