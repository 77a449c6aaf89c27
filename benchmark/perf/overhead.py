"""The tuned patch's price per sampling step (section 2): plain vs patched model, and the pivot pass's share.

Same model, latent side, sampler, cfg and seed; the upsamplers are freshly initialised (cost does not
depend on the weights) and on at every step (end_timestep -1). The pivot pass (the frozen input blocks
and middle block on the half-size pivot, batch 2 as under cfg) is timed alone; the upsampler modules'
share is what remains of the patched step's extra time.
"""
from __future__ import annotations

from .models import Device


def sampler_steps(model, side: int, steps: int, cfg: float, cond, uncond, device: Device):
    """Seconds per step and peak memory of ``steps`` euler steps at ``side`` (after the caller's warm-up)."""
    import comfy.sample
    import torch

    empty = torch.zeros(1, 4, side, side)
    device.reset_peak()
    t0 = device.timer()
    out = comfy.sample.sample(model, comfy.sample.prepare_noise(empty, 0), steps, cfg, "euler", "normal",
                              cond, uncond, empty, disable_pbar=True, seed=0)
    sec = (device.timer() - t0) / steps
    if not bool(torch.isfinite(out).all()):
        raise FloatingPointError(f"non-finite output at latent side {side}")
    return sec, device.peak_mib()


def pivot_pass_seconds(model, uset, spec: dict, side: int, device: Device, repeats: int) -> float:
    """Seconds of one pivot pass (the patch's frozen UNet work on the half-size pivot), batch 2."""
    import torch
    from self_cascade.nodes.wrapper import model_emb, pivot_features

    from .models import unet_inputs

    unet = model.model.diffusion_model
    dev = next(unet.parameters()).device
    dtype = model.model.get_dtype()
    x, t, ctx, y = unet_inputs(spec, side, 2, dev, dtype)
    pivot = torch.zeros(2, 4, (side + 1) // 2, (side + 1) // 2, device=dev, dtype=dtype)
    with torch.no_grad():
        emb = model_emb(unet, x, t, y, {})
        pivot_features(unet, pivot, emb, ctx, uset.taps, {})  # warm-up
        t0 = device.timer()
        for _ in range(repeats):
            pivot_features(unet, pivot, emb, ctx, uset.taps, {})
        return (device.timer() - t0) / repeats


def overhead_rows(model, spec: dict, side: int, upsamplers: dict, steps: int, cfg: float, cond, uncond,
                  device: Device, repeats: int = 1) -> list[dict]:
    """plain / official / light at latent ``side``: s/step, x plain, peak memory, pivot-pass share."""
    import torch
    from self_cascade.nodes.patch import apply_upsamplers

    pivot = torch.randn(1, 4, side // 2, side // 2, generator=torch.Generator().manual_seed(3))
    models = {"plain": model}
    for variant, uset in upsamplers.items():
        models[variant] = apply_upsamplers(model, uset, pivot, 1.0, -1.0)
    for m in models.values():  # warm-up: kernels, allocator, upsampler loads
        sampler_steps(m, side, 1, cfg, cond, uncond, device)
    rows = []
    for name, m in models.items():
        runs = sorted(sampler_steps(m, side, steps, cfg, cond, uncond, device) for _ in range(repeats))
        sec, peak = runs[(len(runs) - 1) // 2]
        r = dict(name=name, side=side, s_per_step=sec, peak_mib=peak)
        if name != "plain":
            uset = upsamplers[name]
            r["params"] = uset.num_params()
            r["pivot_s"] = pivot_pass_seconds(model, uset, spec, side, device, max(1, steps))
        rows.append(r)
    plain = rows[0]
    for r in rows:
        r["ratio"] = r["s_per_step"] / plain["s_per_step"]
        r["mem_ratio"] = r["peak_mib"] / plain["peak_mib"] if device.cuda else float("nan")
        if "pivot_s" in r:
            r["pivot_share"] = r["pivot_s"] / plain["s_per_step"]
            r["upsampler_share"] = r["ratio"] - 1.0 - r["pivot_share"]
    return rows
