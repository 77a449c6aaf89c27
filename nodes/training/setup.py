"""Run set-up around the training loop: precision, frozen base, UNet gradient checkpointing, a
fresh upsampler set and its optimiser, and restoring both from a checkpoint."""
from __future__ import annotations

import os
from contextlib import ExitStack

import torch

from ...upsampler.checkpoint import Checkpoint
from ...upsampler.modules import UpsamplerSet
from ...upsampler.taps import derive_taps, emb_dim
from ..common import SelfCascadeError
from ..patch import model_family
from .config import RESUME_MUST_MATCH, TrainConfig


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 (or fp16 when asked) autocast on CUDA; None (fp32) on the CPU or when ``fp32``."""
    if cfg.mixed_precision == "fp32" or device.type != "cuda":
        return None
    if cfg.mixed_precision in ("auto", "bf16") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16 if cfg.mixed_precision == "fp16" else None


def gradient_checkpointing(stack: ExitStack, unet: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> bool:
    """Recompute every layer of every UNet block in backward (instance-level ``forward``, undone on
    exit). Layers, not blocks: ``forward_timestep_embed`` calls a block's layers directly."""
    on = cfg.gradient_checkpointing == "on" or (cfg.gradient_checkpointing == "auto" and device.type == "cuda")
    if not on:
        return False
    import torch.utils.checkpoint as tuc

    blocks = list(unet.input_blocks) + [unet.middle_block] + list(unet.output_blocks)
    for layer in (layer for block in blocks for layer in block):
        orig = layer.forward

        def fwd(*a, _orig=orig, **k):
            if not torch.is_grad_enabled():
                return _orig(*a, **k)
            return tuc.checkpoint(_orig, *a, use_reentrant=False, **k)

        layer.forward = fwd
        stack.callback(layer.__dict__.pop, "forward", None)
    return True


def frozen(stack: ExitStack, module: torch.nn.Module) -> None:
    """requires_grad False on every base parameter for the run; flags restored (by name) on exit."""
    flags = {name: p.requires_grad for name, p in module.named_parameters()}
    for p in module.parameters():
        with torch.inference_mode(p.is_inference()):
            p.requires_grad_(False)

    def restore():
        for name, p in module.named_parameters():
            if name in flags and p.requires_grad != flags[name]:
                with torch.inference_mode(p.is_inference()):
                    p.requires_grad_(flags[name])

    stack.callback(restore)


def new_upsamplers(model, unet: torch.nn.Module, cfg: TrainConfig) -> UpsamplerSet:
    """A fresh set for ``model``, initialised from ``cfg.seed`` (the global RNG is left untouched),
    fp32 on the model's device, in train mode."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        uset = UpsamplerSet.create(derive_taps(unet), emb_dim(unet), model_family(model), cfg.variant,
                                   cfg.variant_size, K=float(cfg.K), end_timestep=float(cfg.end_timestep),
                                   scale=float(cfg.scale))
    return uset.to(device=model.load_device, dtype=torch.float32).train()


def new_optimizer(uset: UpsamplerSet, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW on the upsampler parameters only (paper: lr 5e-5, weight decay 0.01)."""
    return torch.optim.AdamW(list(uset.parameters()), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)


def restore(ckpt: Checkpoint, cfg: TrainConfig, uset: UpsamplerSet, optimizer: torch.optim.Optimizer,
            gen: torch.Generator, path: str) -> None:
    """Load weights, optimiser state and the data/noise RNG from ``ckpt``; the shape-relevant
    settings must match (RESUME_MUST_MATCH), the current learning rate and weight decay win."""
    old = ckpt.config.get("train", {})
    diff = [f"{k}: {old.get(k)!r} -> {getattr(cfg, k)!r}" for k in RESUME_MUST_MATCH
            if k in old and old[k] != getattr(cfg, k)]
    if diff:
        raise SelfCascadeError(f"cannot resume from {os.path.basename(path)}: settings changed ({'; '.join(diff)}). "
                               "Use the checkpoint's settings or a new save_name.")
    try:
        uset.load_state_dict(ckpt.weights)
    except RuntimeError as e:
        raise SelfCascadeError(f"checkpoint {os.path.basename(path)} does not fit this model/variant: {e}") from None
    optimizer.load_state_dict(ckpt.optimizer)
    for group in optimizer.param_groups:
        group["lr"], group["weight_decay"] = cfg.learning_rate, cfg.weight_decay
    gen.set_state(ckpt.rng["generator"])
