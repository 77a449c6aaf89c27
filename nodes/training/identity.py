"""Which run wrote a file: a digest of a training run's inputs, kept in the saved set's metadata.

A finished training prompt queued again is served from ComfyUI's cache while it stays there; after the cache
let it go (another prompt ran in between), the node runs again, finds its own file and returns it instead of
training again. A file written by a different run (other settings, images, prompt, model or VAE) is never
overwritten: the node refuses as before.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os

import torch

from ...upsampler.fileformat import UpsamplerFileError, load_upsamplers, read_info
from .config import TrainConfig
from .hooks import checkpoint_path_for

logger = logging.getLogger(__name__)

__all__ = ["RUN_ID_KEY", "finished_run", "run_id"]

#: Key of the digest in ``UpsamplerInfo.extra``.
RUN_ID_KEY = "run_id"


def _feed(h, value) -> None:
    """Feed ``value`` (tensors, containers, plain values) into the hash ``h``, in a stable order."""
    if torch.is_tensor(value):
        t = value.detach().to("cpu").contiguous()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        for k in sorted(value, key=str):
            h.update(str(k).encode())
            _feed(h, value[k])
    elif isinstance(value, (list, tuple)):
        h.update(f"[{len(value)}".encode())
        for v in value:
            _feed(h, v)
    elif value is None or isinstance(value, (str, int, float, bool)):
        h.update(repr(value).encode())
    else:
        h.update(type(value).__name__.encode())


def _weights_sample(module) -> list:
    """The first and last parameter of a module (a cheap stand-in for its weights), or its type's name."""
    params = list(module.parameters()) if isinstance(module, torch.nn.Module) else []
    return [params[0], params[-1], len(params)] if params else [type(module).__name__]


def run_id(config: TrainConfig, model, vae, images, texts: list[str], conditioning) -> str:
    """A digest of the run's inputs: settings, images (pixels, or the folder's names, times and sizes),
    captions/prompt, the conditioning, and samples of the model's and the VAE's weights."""
    h = hashlib.sha256()
    _feed(h, json.dumps(dataclasses.asdict(config), sort_keys=True))
    _feed(h, images)
    _feed(h, list(texts))
    _feed(h, conditioning)
    _feed(h, type(model.model.model_config).__name__)
    _feed(h, _weights_sample(model.get_model_object("diffusion_model")))
    _feed(h, _weights_sample(getattr(vae, "first_stage_model", vae)))
    return h.hexdigest()


def finished_run(save_path: str, rid: str):
    """(set, losses) when ``save_path`` holds the finished result of the run ``rid``, else None."""
    if not os.path.exists(save_path):
        return None
    try:
        if read_info(save_path).extra.get(RUN_ID_KEY) != rid:
            return None
        uset = load_upsamplers(save_path)
    except (UpsamplerFileError, ValueError, OSError):
        return None
    losses: list[float] = []
    ckpt = checkpoint_path_for(save_path)
    if os.path.exists(ckpt):
        from ...upsampler.checkpoint import load_checkpoint

        try:
            losses = list(load_checkpoint(ckpt).losses)
        except (UpsamplerFileError, ValueError, OSError):
            logger.info("Self-Cascade training: %s unreadable; the loss curve is left empty.", ckpt)
    logger.info("Self-Cascade training: %s is this run's finished result; returning it (nothing retrained).",
                os.path.basename(save_path))
    return uset, losses
