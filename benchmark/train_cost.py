"""Training cost: Self-Cascade upsampler training vs full UNet fine-tuning vs a LoRA of similar size.

A thin command line over the performance suite's training rows (``benchmark/perf/training.py``; the
whole suite at real sizes is ``benchmark/gpu_suite.py``): same model layout, latent resolution, loss
(eps MSE on x_t from the model's own model_sampling), AdamW and forward entry point
(``BaseModel.apply_model`` with the patched clone's transformer_options for the upsamplers). Each
method runs in its own fresh subprocess so its peak memory is its own: on CUDA
``torch.cuda.max_memory_allocated``; on CPU the peak RSS (``ru_maxrss``) and its growth from just
before the method's model is built. Default precision fp32 (``--precision bf16``: bf16 autocast with the
frozen base in bf16, as the suite measures on CUDA).

    dev/host.py setup  # once;  then:
    .host/venv/bin/python benchmark/train_cost.py --preset small --steps 6
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: UNet presets (SD1.5 layout; ``res`` = latent side). ``sd15`` is the real size (needs ~20 GB for full FT).
PRESETS = {
    "tiny": dict(unet=dict(model_channels=32, channel_mult=[1, 2], num_res_blocks=[1, 1],
                           transformer_depth=[1, 1], transformer_depth_output=[1, 1, 1, 1]), context=32, res=16),
    "small": dict(unet=dict(model_channels=64, channel_mult=[1, 2, 4], num_res_blocks=[2, 2, 2],
                            transformer_depth=[1] * 6, transformer_depth_output=[1] * 9), context=128, res=32),
    "sd15": dict(unet=None, context=768, res=64),
}
#: method names of this command line -> the suite's
METHODS = {"upsamplers": "official", "lora": "lora", "full": "full"}


def _spec(preset: str) -> dict:
    import hostenv  # the dev host harness (dev/ is on the host venv's path)

    hostenv.start()
    from self_cascade.benchmark.perf.models import SPECS, TINY_UNET

    p = PRESETS[preset]
    if p["unet"] is None:
        return SPECS["sd15"]
    return dict(SPECS["tiny"], unet=dict(TINY_UNET, **p["unet"], context_dim=p["context"]), context=p["context"])


def worker(method: str, preset: str, steps: int, warmup: int, rank: int, precision: str,
           checkpointing: bool) -> dict:
    import torch

    spec = _spec(preset)
    from self_cascade.benchmark.perf.models import Device
    from self_cascade.benchmark.perf.training import train_row

    device = Device("cuda" if torch.cuda.is_available() else "cpu")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # before the model is built
    r = train_row(spec, METHODS[method], PRESETS[preset]["res"], checkpointing, steps, warmup, device, rank, precision)
    if not device.cuda:
        r["peak_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        r["peak_growth_mib"] = r["peak_mib"] - rss0 / 1024
    else:
        r["peak_growth_mib"] = r["peak_mib"] - r["resident_mib"]
    r.update(method=method, device=device.kind, sec_per_step=r["s_per_step"])
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=list(PRESETS), default="small")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rank", type=int, default=0, help="LoRA rank (0: chosen to match the upsamplers' size)")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--checkpointing", action="store_true", help="the training node's gradient checkpointing")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--worker", choices=list(METHODS))
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    if a.worker:
        print(json.dumps(worker(a.worker, a.preset, a.steps, a.warmup, a.rank or 8, a.precision, a.checkpointing)))
        return
    rank = a.rank
    if not rank:  # match the trainable size of the official upsamplers (meta-device count)
        from self_cascade.benchmark.perf.training import matched_lora

        rank = matched_lora(_spec(a.preset))["lora_rank"]
    py = sys.executable
    rows = {m: json.loads(_run(py, m, a, rank)) for m in METHODS}
    print(f"preset {a.preset}, latent {PRESETS[a.preset]['res']}^2, device {rows['full']['device']}, "
          f"{a.steps} timed steps after {a.warmup} warm-up, threads {a.threads}, {a.precision}, "
          f"checkpointing {'on' if a.checkpointing else 'off'}")
    print(f"{'method':<12}{'trainable':>14}{'s/step':>10}{'peak MiB':>11}{'growth MiB':>12}")
    for m, r in rows.items():
        name = f"lora r{rank}" if m == "lora" else m
        print(f"{name:<12}{r['trainable']:>14,}{r['sec_per_step']:>10.3f}{r['peak_mib']:>11.0f}{r['peak_growth_mib']:>12.0f}")
    up, full, lora = rows["upsamplers"], rows["full"], rows["lora"]
    print(f"UNet params {full['unet_params']:,}; upsamplers = {up['trainable'] / full['unet_params']:.1%} of it")
    print(f"speed-up upsamplers vs full FT: {full['sec_per_step'] / up['sec_per_step']:.2f}x (paper claims 5x); "
          f"vs LoRA: {lora['sec_per_step'] / up['sec_per_step']:.2f}x")
    print(f"peak memory full FT / upsamplers: {full['peak_mib'] / up['peak_mib']:.2f}x (growth "
          f"{full['peak_growth_mib'] / max(up['peak_growth_mib'], 1):.2f}x); LoRA / upsamplers: "
          f"{lora['peak_mib'] / up['peak_mib']:.2f}x")


def _run(py: str, method: str, a: argparse.Namespace, rank: int) -> str:
    cmd = [py, __file__, "--worker", method, "--preset", a.preset, "--steps", str(a.steps), "--warmup", str(a.warmup),
           "--rank", str(rank), "--threads", str(a.threads), "--precision", a.precision]
    cmd += ["--checkpointing"] if a.checkpointing else []
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), cwd=str(REPO))
    if out.returncode:
        raise SystemExit(f"{method} worker failed:\n{out.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1]


if __name__ == "__main__":
    main()
