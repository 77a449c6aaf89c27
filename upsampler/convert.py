"""Convert the official SDXL ``upsampler_only.pth`` (a Lightning state dict) to our set.

Official keys: ``unet.feature_upsampler{i}.{j}.{in_layers.0, in_layers.2, emb_layers.1,
out_layers.0, out_layers.3}.{weight,bias}`` with i = 0..3 (taps) and j = 0 (the upsampling
ResBlock) or 1 -- 80 tensors. Ours: ``ups.{i}.blocks.{j}.<same suffix>``.

Reading is weights-only (``torch.load(weights_only=True)``): it cannot run code from the file.
A file that needs full unpickling is refused with :class:`PickleRefusedError`, whose message
names the offending object and the explicit opt-in (the converter CLI's ``--trust-pickle``).
:func:`load_official_cached` converts once and keeps the result beside the ``.pth`` as
``<stem>.converted.safetensors`` (tagged with the source's size and mtime, so a replaced
``.pth`` is converted again).
"""
from __future__ import annotations

import logging
import os
import pickle
import re

import torch

from .fileformat import UpsamplerFileError, load_upsamplers, read_info, save_upsamplers
from .modules import UpsamplerSet
from .taps import Tap

logger = logging.getLogger(__name__)

#: SDXL taps in ComfyUI block names (diffusers down_blocks[0..2] outputs and mid block).
SDXL_TAPS = [Tap(("input", 3), 320, 2), Tap(("input", 6), 640, 4), Tap(("input", 8), 1280, 4),
             Tap(("middle", 0), 1280, 4)]
SDXL_EMB_DIM = 1280
SDXL_FAMILY = "SDXL"
_KEY = re.compile(r"^(?:unet\.|model\.|module\.)*feature_upsampler(\d+)\.(\d+)\.(.+)$")
#: Official weights are a pickled torch file; its converted cache sits beside it.
PTH_SUFFIX = ".pth"
CACHE_SUFFIX = ".converted.safetensors"
CONVERTER = "scripts/convert_official_upsamplers.py"
_GLOBAL = re.compile(r"unsupported (?:global: )?GLOBAL ([\w.]+)", re.IGNORECASE)


class PickleRefusedError(ValueError):
    """Weights-only unpickling refused the file; the message says why and how to opt in."""


def convert_state_dict(sd: dict[str, torch.Tensor], source: str = "state dict") -> UpsamplerSet:
    """Map an official state dict onto a fresh official-variant SDXL set; strict about keys and shapes."""
    if isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    with torch.device("meta"):  # shapes only; the weights are assigned from the file below
        uset = UpsamplerSet.create(SDXL_TAPS, SDXL_EMB_DIM, SDXL_FAMILY, "official", K=700.0,
                                   end_timestep=100.0, scale=2.0, steps=0,
                                   extra={"source": os.path.basename(source)})
    ours = uset.state_dict()
    found: dict[str, tuple[str, torch.Tensor]] = {}
    ignored = []
    for key, value in sd.items():  # check every name, shape and dtype before copying anything
        m = _KEY.match(key)
        if not m:
            ignored.append(key)
            continue
        new = f"ups.{m.group(1)}.blocks.{m.group(2)}.{m.group(3)}"
        if new not in ours:
            raise ValueError(f"{source}: unexpected upsampler tensor {key!r} (no counterpart {new!r})")
        if not torch.is_tensor(value) or tuple(value.shape) != tuple(ours[new].shape):
            shape = tuple(value.shape) if torch.is_tensor(value) else type(value).__name__
            raise ValueError(f"{source}: tensor {key!r} has shape {shape}, expected {tuple(ours[new].shape)} "
                             "(is this the SDXL upsampler_only.pth?)")
        if not value.is_floating_point():
            raise ValueError(f"{source}: tensor {key!r} has dtype {value.dtype}, expected a floating-point weight "
                             "(float32/16 or bfloat16); the file is not the SDXL upsampler_only.pth or is damaged")
        found[new] = (key, value)
    missing = sorted(set(ours) - set(found))
    if missing:
        raise ValueError(f"{source}: {len(missing)} of {len(ours)} upsampler tensors missing, e.g. "
                         f"{missing[:3]} ({len(ignored)} keys without 'feature_upsampler' were ignored)")
    mapped: dict[str, torch.Tensor] = {}
    for new, (key, value) in found.items():
        if not torch.isfinite(value).all():
            raise ValueError(f"{source}: tensor {key!r} contains NaN or Inf")
        mapped[new] = value.detach().float().contiguous()
    uset.load_state_dict(mapped, assign=True)
    return uset


def cache_path(pth_path: str) -> str:
    """Where the converted set of ``pth_path`` is kept: the same folder, ``<stem>.converted.safetensors``."""
    folder, name = os.path.split(pth_path)
    stem = name[: -len(PTH_SUFFIX)] if name.lower().endswith(PTH_SUFFIX) else name
    return os.path.join(folder, stem + CACHE_SUFFIX)


def _refusal_reason(message: str) -> str:
    m = _GLOBAL.search(message)
    if m:
        return (f"it contains the Python object {m.group(1)}, which weights-only loading does not allow "
                "(unpickling an arbitrary object can run code)")
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    detail = next((ln for ln in lines if "error" in ln.lower() and "weights only load failed" not in ln.lower()),
                  lines[-1] if lines else message)
    return f"torch refused it: {detail[:300]}"


def read_official(path: str, trust_pickle: bool = False) -> dict:
    """The dict stored in an official ``.pth``, read weights-only.

    ``trust_pickle`` (the CLI's explicit opt-in) falls back to full unpickling when the
    weights-only load refuses the file; the caller must warn the user.
    """
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if not trust_pickle:
            raise PickleRefusedError(
                f"cannot read '{path}' as a weights-only torch file: {_refusal_reason(str(e))}. If you trust this "
                "file (e.g. upsampler_only.pth from the official Self-Cascade release), convert it once with full "
                f"unpickling, an explicit opt-in:\n  python {CONVERTER} --trust-pickle \"{path}\"\n"
                f"This writes '{os.path.basename(cache_path(path))}' beside it, which the Upsampler Loader then "
                "uses when you pick the .pth.") from None
        sd = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # corrupt or not a torch file: say which file
        raise ValueError(f"cannot read '{path}' as a weights-only torch file: {e} "
                         "(a truncated or corrupt download? Download it again.)") from None
    if not isinstance(sd, dict):
        raise ValueError(f"'{path}' holds a {type(sd).__name__}, not a state dict")
    return sd


def load_official_pth(path: str, trust_pickle: bool = False) -> UpsamplerSet:
    """Read ``upsampler_only.pth`` safely (weights_only unless ``trust_pickle``) and convert it."""
    uset = convert_state_dict(read_official(path, trust_pickle), source=path)
    uset.info.extra.update(source_stamp(path))
    return uset


def source_stamp(path: str) -> dict:
    """What identifies the source file for the cache: its size and modification time."""
    st = os.stat(path)
    return {"source_bytes": str(st.st_size), "source_mtime_ns": str(st.st_mtime_ns)}


def cached_set_is_current(path: str, cache: str) -> bool:
    """Whether ``cache`` holds the conversion of ``path`` as it is now."""
    try:
        extra = read_info(cache).extra
    except UpsamplerFileError as e:
        logger.warning("Self-Cascade: ignoring unreadable converted cache %s (%s)", cache, e)
        return False
    stamp = source_stamp(path)
    return all(str(extra.get(k)) == v for k, v in stamp.items())


def load_official_cached(path: str) -> tuple[UpsamplerSet, bool]:
    """The set of the official ``path``: from its converted cache when current, else converted now
    (weights-only) and cached beside it (atomic write). Returns (set, converted_now)."""
    cache = cache_path(path)
    if os.path.isfile(cache) and cached_set_is_current(path, cache):
        return load_upsamplers(cache), False
    uset = load_official_pth(path)
    try:
        save_upsamplers(cache, uset)
    except OSError as e:  # full disk, I/O error, read-only folder (WriteFailedError): usable, converted again next time
        logger.warning("Self-Cascade: could not cache the converted set as %s (%s); it is converted in memory "
                       "on every load", cache, e)
    return uset, True
