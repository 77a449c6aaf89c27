"""Training step cost (section 3): upsamplers (official, light) vs full fine-tuning vs a LoRA of matched size.

Same seeded model layout, latent side, loss (eps MSE on x_t from the model's own model_sampling,
timesteps in [101, 700] as the upsampler training samples them), AdamW, forward entry point
(``BaseModel.apply_model``; the upsamplers through the patched clone's DIFFUSION_MODEL wrapper, as the
training node installs it) and bf16 autocast. Precision as each method trains in practice: the frozen
base of the upsampler and LoRA rows in bf16 (ComfyUI's inference dtype), full fine-tuning with fp32
master weights; trainable parameters (upsamplers, LoRA, full UNet) and AdamW states in fp32.
Gradient checkpointing is the training node's own (every layer of every UNet block recomputed).

Each row builds its own model and frees everything after, so its peak memory is its own
(``torch.cuda.max_memory_allocated`` from before the model is built; NaN on the CPU).
"""
from __future__ import annotations

from contextlib import ExitStack
from types import SimpleNamespace

from .models import Device, build_model

METHODS = ("official", "light", "lora", "full")
METHOD_DOCS = {
    "official": "train the official-size upsampler set; base UNet frozen (bf16)",
    "light": "train the light upsampler set; base UNet frozen (bf16)",
    "lora": "train a LoRA (every attention/feed-forward/projection Linear) with as many parameters as the "
            "official set; base frozen (bf16)",
    "full": "full fine-tuning: every UNet weight (fp32 master weights)",
}


def _gradient_checkpointing():
    """The training node's gradient checkpointing function (module moved during a refactor: try both homes)."""
    try:
        from self_cascade.nodes.training.setup import gradient_checkpointing
    except ImportError:
        from self_cascade.nodes.train import _gradient_checkpointing as gradient_checkpointing
    return gradient_checkpointing


def lora_targets(unet):
    """(name, Linear) for every attention, feed-forward and projection Linear of the UNet."""
    import torch

    return [(name, mod) for name, mod in unet.named_modules()
            if isinstance(mod, torch.nn.Linear) and (".attn" in name or ".ff." in name or "proj_" in name)]


def matched_rank(unet, params: int) -> int:
    """The LoRA rank whose parameter count is closest to ``params`` (each target adds rank*(in+out))."""
    per_rank = sum(m.in_features + m.out_features for _, m in lora_targets(unet))
    return max(1, round(params / per_rank))


def add_lora(unet, rank: int) -> list:
    """Rank-``rank`` LoRA on every target Linear (instance-level forward; B zero-initialised, fp32)."""
    import torch

    params = []
    dev = next(unet.parameters()).device
    for _, mod in lora_targets(unet):
        a = torch.nn.Parameter(torch.randn(rank, mod.in_features, device=dev) / mod.in_features ** 0.5)
        b = torch.nn.Parameter(torch.zeros(mod.out_features, rank, device=dev))
        orig = mod.forward
        mod.forward = (lambda x, _o=orig, _a=a, _b=b: _o(x) + ((x @ _a.t().to(x.dtype)) @ _b.t().to(x.dtype)))
        params += [a, b]
    return params


def train_row(spec: dict, method: str, side: int, checkpointing: bool, steps: int, warmup: int, device: Device,
              lora_rank: int = 0, precision: str = "bf16") -> dict:
    """Seconds per optimiser step and peak memory of one method at latent ``side`` (batch 1).

    ``precision``: "bf16" (bf16 autocast, frozen base in bf16) or "fp32" (everything fp32, no autocast).
    """
    device.free()
    device.reset_peak()
    resident = device.allocated_mib()
    result = _measure(spec, method, side, checkpointing, steps, warmup, device, lora_rank, precision)
    result["resident_mib"] = resident  # memory held before the row's model was built (should be ~0)
    device.free()
    return result


def _measure(spec: dict, method: str, side: int, checkpointing: bool, steps: int, warmup: int, device: Device,
             lora_rank: int, precision: str) -> dict:
    """The row itself; everything it builds is local, so it is released when this returns."""
    import contextlib

    import torch
    from self_cascade.nodes.patch import TrainingPatch, model_family
    from self_cascade.upsampler.modules import UpsamplerSet
    from self_cascade.upsampler.taps import derive_taps, emb_dim

    dev = torch.device(device.kind)
    if precision not in ("bf16", "fp32"):
        raise ValueError(f"precision {precision!r}: bf16 or fp32")
    bf16 = precision == "bf16"
    model = build_model(spec, device.kind, dtype=torch.bfloat16 if bf16 and method != "full" else torch.float32)
    base = model.model.to(dev)  # the weights are built there; this moves model_sampling's buffers too
    unet = base.diffusion_model
    unet.requires_grad_(method == "full")
    opts: dict = {}
    patch = None
    if method in ("official", "light"):
        uset = UpsamplerSet.create(derive_taps(unet), emb_dim(unet), model_family(model), method).to(dev)
        patch = TrainingPatch(uset, torch.zeros(1, 4, side // 2, side // 2), 1.0, 100.0, dtype=torch.float32)
        opts = {"wrappers": patch.install(model).wrappers}  # what prepare_model_patcher merges in
        params = list(uset.parameters())
    elif method == "full":
        params = list(unet.parameters())
    else:
        params = add_lora(unet, lora_rank or 1)
    extra = dict(fused=True) if device.cuda else {}
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.01, **extra)
    g = torch.Generator(device=dev).manual_seed(0)
    ms = base.model_sampling
    ctx = torch.randn(1, 77 if spec["context"] > 32 else 8, spec["context"], generator=g, device=dev)
    adm = spec["unet"].get("adm_in_channels")
    y = dict(y=torch.randn(1, adm, generator=g, device=dev)) if adm else {}

    def step() -> float:
        x0 = torch.randn(1, 4, side, side, generator=g, device=dev)
        if patch is not None:
            patch.pivot = torch.randn(1, 4, side // 2, side // 2, generator=g, device=dev)
        t = torch.randint(101, 701, (1,), generator=g, device=dev).float()
        sigma = ms.sigma(t)
        noise = torch.randn(x0.shape, generator=g, device=dev)
        xt = ms.noise_scaling(sigma, noise, x0, False)
        with torch.autocast(dev.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            den = base.apply_model(xt, sigma, c_crossattn=ctx, transformer_options=dict(opts), **y)
        loss = torch.nn.functional.mse_loss((xt - den.float()) / sigma.view(-1, 1, 1, 1), noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    with ExitStack() as stack:
        _gradient_checkpointing()(stack, unet, SimpleNamespace(gradient_checkpointing="on" if checkpointing else "off"),
                                  dev)
        for _ in range(warmup):  # kernels, allocator, optimiser states
            step()
        t0 = device.timer()
        losses = [step() for _ in range(steps)]
        sec = (device.timer() - t0) / steps
    return dict(method=method, side=side, checkpointing=checkpointing, precision=precision, s_per_step=sec,
                peak_mib=device.peak_mib(),
                trainable=sum(p.numel() for p in params), unet_params=sum(p.numel() for p in unet.parameters()),
                rank=lora_rank if method == "lora" else None, finite=all(map(_finite, losses)))


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def matched_lora(spec: dict) -> dict:
    """Parameter counts of both upsampler sets for ``spec`` and the LoRA rank matching the official set
    (built on the meta device: no memory)."""
    from self_cascade.upsampler.modules import parameter_counts
    from self_cascade.upsampler.taps import derive_taps, emb_dim

    unet = build_model(spec, "meta").model.diffusion_model
    counts = parameter_counts(derive_taps(unet), emb_dim(unet))
    rank = matched_rank(unet, counts["official"])
    per_rank = sum(m.in_features + m.out_features for _, m in lora_targets(unet))
    return dict(counts, lora_rank=rank, lora_params=rank * per_rank)
