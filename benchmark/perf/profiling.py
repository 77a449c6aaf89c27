"""``--profile``: where an inference row's time goes.

Per row: its wall time (the timed, unprofiled run), the GPU's busy time (the union of the kernel and copy
intervals that ``torch.profiler`` recorded on the device in one more, profiled run of the same row) and the
idle share ``1 - busy / wall``; on the CPU the device time is 0 (no device activity is recorded), so the
idle share is 1 by definition. Per sampling call (``comfy.sample.sample`` / ``sample_custom``, wrapped while
the timed run runs): its latent size, device-synchronised wall time, UNet calls and milliseconds per call.
The wrappers sync the device once per sampling call (three per cascade row), where the sampler's result is
handed back anyway.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict

from .models import Device, UnetMeter

#: the sampling entry points the rows use (core KSampler's path and the cascade stages' custom sigmas)
SAMPLING_FUNCTIONS = ("sample", "sample_custom")


def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by ``(start, end)`` intervals (overlaps counted once), in the intervals' unit."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


@contextlib.contextmanager
def sampling_calls(meter: UnetMeter, device: Device):
    """Record every sampling call made inside the block: yields the list the records go into."""
    import comfy.sample

    records: list[dict] = []
    saved = {name: getattr(comfy.sample, name) for name in SAMPLING_FUNCTIONS}

    def wrap(name, fn):
        def timed(model, noise, *args, **kwargs):
            calls0 = meter.calls
            t0 = device.timer()
            out = fn(model, noise, *args, **kwargs)
            wall = device.timer() - t0
            n = meter.calls - calls0
            records.append(dict(fn=name, latent=list(noise.shape[-2:]), wall_s=wall, unet_calls=n,
                                ms_per_call=1000 * wall / n if n else float("nan")))
            return out
        return timed

    for name, fn in saved.items():
        setattr(comfy.sample, name, wrap(name, fn))
    try:
        yield records
    finally:
        for name, fn in saved.items():
            setattr(comfy.sample, name, fn)


def profiled_run(fn, device: Device, top: int = 8) -> dict:
    """Run ``fn`` once under ``torch.profiler`` (CPU activity, and CUDA's on a CUDA device): device busy
    seconds (union of the device-side intervals), the profiled wall time, the top device kernels and the top
    host operators by self time."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.cuda else [])
    t0 = device.timer()
    with profile(activities=acts) as prof:
        fn()
        device.sync()
    wall = device.timer() - t0
    events = prof.events()
    spans, kernels, host = [], defaultdict(lambda: [0.0, 0]), defaultdict(lambda: [0.0, 0])
    for e in events:
        if e.device_type == DeviceType.CPU:
            host[e.name][0] += e.self_cpu_time_total / 1e6
            host[e.name][1] += 1
            continue
        spans.append((e.time_range.start, e.time_range.end))
        kernels[e.name][0] += e.time_range.elapsed_us() / 1e6
        kernels[e.name][1] += 1

    def best(d):
        return [dict(name=k[:90], s=round(v[0], 4), n=v[1])
                for k, v in sorted(d.items(), key=lambda kv: -kv[1][0])[:top]]
    return dict(profiled_wall_s=wall, device_busy_s=union_seconds(spans) / 1e6, device_kernels=best(kernels),
                host_ops=best(host))


def row_profile(wall_s: float, calls: list[dict], prof: dict) -> dict:
    """The row's profile record: busy and idle from the profiled run against the timed run's wall time."""
    busy = prof["device_busy_s"]
    return dict(wall_s=wall_s, device_busy_s=busy, idle_s=max(0.0, wall_s - busy),
                idle_share=max(0.0, 1.0 - busy / wall_s) if wall_s > 0 else float("nan"),
                sampling_calls=calls, **{k: v for k, v in prof.items() if k != "device_busy_s"})


def versus(row: dict, ref: dict) -> list[str]:
    """Per sampling call (same order, same latent) the extra ms per UNet call of ``row`` over ``ref``."""
    out = []
    for a, b in zip(row["profile"]["sampling_calls"], ref["profile"]["sampling_calls"], strict=False):
        if a["latent"] == b["latent"] and b["ms_per_call"] > 0:
            extra = a["ms_per_call"] - b["ms_per_call"]
            out.append(f"  vs {ref['name']} at {a['latent'][0]}x{a['latent'][1]}: {extra:+.1f} ms/call "
                       f"({100 * extra / b['ms_per_call']:+.0f}%)")
    return out


def text(res: dict) -> str:
    """profile.txt: per row busy / idle, per sampling call (the tuned rows also against tf_cascade), the top
    kernels and host operators."""
    out = []
    for fam, rows in res.get("inference", {}).items():
        tf = next((r for r in rows if r["name"] == "tf_cascade" and r.get("profile")), None)
        for r in rows:
            p = r.get("profile")
            if not p:
                continue
            out.append(f"=== {fam} {r['name']}: wall {p['wall_s']:.3f} s (profiled {p['profiled_wall_s']:.3f} s); "
                       f"device busy {p['device_busy_s']:.3f} s; idle {p['idle_s']:.3f} s "
                       f"({100 * p['idle_share']:.0f}%)")
            for c in p["sampling_calls"]:
                out.append(f"  {c['fn']:<13} latent {tuple(c['latent'])}: {c['wall_s']:.3f} s, {c['unet_calls']} UNet "
                           f"calls, {c['ms_per_call']:.1f} ms/call")
            out += versus(r, tf) if tf and r is not tf and r["name"] != "direct" else []
            for title, key in (("top device kernels", "device_kernels"), ("top host self time", "host_ops")):
                out.append(f"  {title}:")
                out += [f"    {k['name']:<90} {1000 * k['s']:9.1f} ms  n={k['n']}" for k in p[key]]
            out.append("")
    return "\n".join(out) + "\n"
