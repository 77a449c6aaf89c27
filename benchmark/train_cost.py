"""Training cost: Self-Cascade upsampler training vs full UNet fine-tuning vs a LoRA of similar size.

Same model (a seeded SD1.5-layout UNet of the chosen preset), same latent resolution, same loss
(eps MSE on x_t from the model's own model_sampling), same AdamW, same forward entry point
(``BaseModel.apply_model`` with the patched clone's transformer_options for the upsamplers).
Each method runs in its own fresh subprocess so its peak memory is its own: on CUDA
``torch.cuda.max_memory_allocated``; on CPU the growth of peak RSS (``ru_maxrss``) from the
point where the model is built (before warm-up), fp32 only (no bf16 autocast on CPU).

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
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: UNet presets (SD1.5 layout; ``res`` = latent side). ``sd15`` is the real size (needs ~20 GB for full FT).
PRESETS = {
    "tiny": dict(unet=dict(model_channels=32, channel_mult=[1, 2], num_res_blocks=[1, 1],
                           transformer_depth=[1, 1], transformer_depth_output=[1, 1, 1, 1]), context=32, res=16),
    "small": dict(unet=dict(model_channels=64, channel_mult=[1, 2, 4], num_res_blocks=[2, 2, 2],
                            transformer_depth=[1] * 6, transformer_depth_output=[1] * 9), context=128, res=32),
    "sd15": dict(unet=dict(model_channels=320, channel_mult=[1, 2, 4, 4], num_res_blocks=[2, 2, 2, 2],
                           transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
                           transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]),
                 context=768, res=64),
}
METHODS = ("upsamplers", "lora", "full")


def _build(preset: str):
    sys.path.insert(0, str(REPO / "dev"))
    sys.path.insert(0, str(REPO / "tests"))
    import hostenv

    hostenv.prepare_in_process()
    hostenv.load_pack()
    import tiny_models

    p = PRESETS[preset]
    model = tiny_models.tiny_sd15(seed=0, context_dim=p["context"], **p["unet"])
    return model, p


def _lora(unet, rank: int):
    """Rank-``rank`` LoRA on every attention/projection Linear (q, k, v, out, ff), B zero-initialised."""
    import torch

    params = []
    for name, mod in unet.named_modules():
        if isinstance(mod, torch.nn.Linear) and (".attn" in name or ".ff." in name or "proj_" in name):
            a = torch.nn.Parameter(torch.randn(rank, mod.in_features) / mod.in_features ** 0.5)
            b = torch.nn.Parameter(torch.zeros(mod.out_features, rank))
            orig = mod.forward
            mod.forward = (lambda x, _o=orig, _a=a, _b=b: _o(x) + (x @ _a.t()) @ _b.t())
            params += [a, b]
    return params


def worker(method: str, preset: str, steps: int, warmup: int, rank: int) -> dict:
    import torch

    model, p = _build(preset)
    from self_cascade.nodes.patch import UpsamplerInjection, model_family
    from self_cascade.upsampler.modules import UpsamplerSet
    from self_cascade.upsampler.taps import derive_taps, emb_dim

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    base = model.model.to(dev)
    unet = base.diffusion_model
    unet.requires_grad_(False)
    opts: dict = {}
    if method == "upsamplers":
        uset = UpsamplerSet.create(derive_taps(unet), emb_dim(unet), model_family(model), "official").to(dev)
        inj = UpsamplerInjection(uset, torch.zeros(1, 4, p["res"] // 2, p["res"] // 2), dtype=torch.float32)
        # what comfy.sampler_helpers.prepare_model_patcher merges into transformer_options
        opts = {"wrappers": inj.install(model).wrappers}
        params = list(uset.parameters())
    elif method == "full":
        unet.requires_grad_(True)
        params = list(unet.parameters())
    else:
        params = _lora(unet, rank)
    opt = torch.optim.AdamW(params, lr=5e-5, weight_decay=0.01)
    g = torch.Generator().manual_seed(0)
    ms = base.model_sampling
    ctx = torch.randn(1, 8, p["context"], generator=g).to(dev)

    def step():
        x0 = torch.randn(1, 4, p["res"], p["res"], generator=g).to(dev)
        if method == "upsamplers":
            inj.pivot = torch.randn(1, 4, p["res"] // 2, p["res"] // 2, generator=g).to(dev)
        sigma = ms.sigma(torch.randint(101, 701, (1,), generator=g).float().to(dev))
        noise = torch.randn(x0.shape, generator=g).to(dev)
        xt = ms.noise_scaling(sigma, noise, x0, False)
        den = base.apply_model(xt, sigma, c_crossattn=ctx, transformer_options=dict(opts))
        loss = torch.nn.functional.mse_loss((xt - den) / sigma.view(-1, 1, 1, 1), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # model built, nothing trained yet
    for _ in range(warmup):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start_mem = torch.cuda.memory_allocated()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    if dev.type == "cuda":
        torch.cuda.synchronize()
    sec = (time.perf_counter() - t0) / steps
    cpu = (time.process_time() - c0) / steps
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
        extra = (torch.cuda.max_memory_allocated() - start_mem) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        extra = peak - rss0 / 1024
    return dict(method=method, device=dev.type, sec_per_step=sec, cpu_sec_per_step=cpu, peak_mib=peak, peak_growth_mib=extra,
                trainable=sum(q.numel() for q in params), unet_params=sum(q.numel() for q in unet.parameters()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=list(PRESETS), default="small")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--rank", type=int, default=0, help="LoRA rank (0: chosen to match the upsamplers' size)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--worker", choices=METHODS)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    if a.worker:
        print(json.dumps(worker(a.worker, a.preset, a.steps, a.warmup, a.rank or 8)))
        return
    py = sys.executable
    rows = {}
    for m in METHODS:
        rank = a.rank
        if m == "lora" and not rank:  # match the trainable size of the upsamplers (by a rank-1 probe)
            probe = rows["upsamplers"]["trainable"]
            r1 = json.loads(_run(py, "lora", a.preset, 1, 0, 1, a.threads))["trainable"]
            rank = max(1, round(probe / r1))
        rows[m] = json.loads(_run(py, m, a.preset, a.steps, a.warmup, rank, a.threads))
        rows[m]["rank"] = rank if m == "lora" else None
    print(f"preset {a.preset}, latent {PRESETS[a.preset]['res']}^2, device {rows['full']['device']}, "
          f"{a.steps} timed steps after {a.warmup} warm-up, threads {a.threads}, fp32")
    print(f"{'method':<12}{'trainable':>14}{'s/step':>10}{'cpu s/step':>12}{'peak MiB':>11}{'growth MiB':>12}")
    for m, r in rows.items():
        name = f"lora r{r['rank']}" if m == "lora" else m
        print(f"{name:<12}{r['trainable']:>14,}{r['sec_per_step']:>10.3f}{r['cpu_sec_per_step']:>12.3f}{r['peak_mib']:>11.0f}{r['peak_growth_mib']:>12.0f}")
    up, full, lora = rows["upsamplers"], rows["full"], rows["lora"]
    print(f"UNet params {full['unet_params']:,}; upsamplers = {up['trainable'] / full['unet_params']:.1%} of it")
    print(f"speed-up upsamplers vs full FT: {full['sec_per_step'] / up['sec_per_step']:.2f}x (paper claims 5x); "
          f"vs LoRA: {lora['sec_per_step'] / up['sec_per_step']:.2f}x")
    print(f"CPU-time speed-up (robust to other load on the machine): vs full FT "
          f"{full['cpu_sec_per_step'] / up['cpu_sec_per_step']:.2f}x, vs LoRA {lora['cpu_sec_per_step'] / up['cpu_sec_per_step']:.2f}x")
    print(f"peak memory full FT / upsamplers: {full['peak_mib'] / up['peak_mib']:.2f}x (growth "
          f"{full['peak_growth_mib'] / max(up['peak_growth_mib'], 1):.2f}x); LoRA / upsamplers: "
          f"{lora['peak_mib'] / up['peak_mib']:.2f}x")


def _run(py: str, method: str, preset: str, steps: int, warmup: int, rank: int, threads: int) -> str:
    cmd = [py, __file__, "--worker", method, "--preset", preset, "--steps", str(steps), "--warmup", str(warmup),
           "--rank", str(rank), "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), cwd=str(REPO))
    if out.returncode:
        raise SystemExit(f"{method} worker failed:\n{out.stderr[-3000:]}")
    return out.stdout.strip().splitlines()[-1]


if __name__ == "__main__":
    main()
