"""The safetensors file format of a trained upsampler set: tensors plus string metadata.

Metadata keys: ``format`` (FORMAT_TAG), ``format_version`` and ``info`` (UpsamplerInfo as JSON:
base model family, taps, emb_dim, variant and size, K, end timestep, scale, training steps).
Loading checks everything a broken or foreign file can get wrong and names the file in the error.
"""
from __future__ import annotations

import json
import os
import struct

import torch

from .checkpoint import atomic_write
from .modules import FORMAT_VERSION, UpsamplerInfo, UpsamplerSet
from .taps import Tap

FORMAT_TAG = "self_cascade.upsamplers"


class UpsamplerFileError(ValueError):
    """A file that is not a valid Self-Cascade upsampler set (message names the file)."""


class IncompatibleUpsamplersError(ValueError):
    """A set that does not fit the model it is applied to."""


def save_upsamplers(path: str, uset: UpsamplerSet) -> None:
    """Write ``uset`` to ``path`` atomically (:func:`upsampler.checkpoint.atomic_write`: fsync, os.replace)."""
    from safetensors.torch import save_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in uset.state_dict().items()}
    meta = {"format": FORMAT_TAG, "format_version": str(FORMAT_VERSION),
            "info": json.dumps(uset.info.to_json())}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=meta))


#: Bytes per element of each safetensors dtype.
_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4,
                "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}


def _tensor_bytes(name: str, key: str, entry) -> tuple[int, int]:
    """The byte range ``(start, end)`` a header entry claims, after checking that its dtype, shape and
    range agree (a header that claims a huge tensor in a few bytes is refused here, before any read)."""
    try:
        dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        ok = (isinstance(dtype, str) and isinstance(shape, list)
              and all(type(d) is int and d >= 0 for d in shape + [start, end]) and start <= end)
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise UpsamplerFileError(f"'{name}' is corrupt: header entry {key!r} is not a tensor description "
                                 "(dtype, shape, data_offsets). Copy or download it again.")
    if dtype not in _DTYPE_BYTES:
        raise UpsamplerFileError(f"'{name}': tensor {key!r} has the unknown dtype {dtype!r}")
    numel = 1
    for d in shape:
        numel *= d
    if numel * _DTYPE_BYTES[dtype] != end - start:
        raise UpsamplerFileError(f"'{name}' is corrupt: tensor {key!r} claims shape {shape} ({dtype}) but "
                                 f"{end - start} bytes of data. Copy or download it again.")
    return start, end


def _read_header(path: str) -> dict:
    """Parse and sanity-check the safetensors header ourselves, for clear errors."""
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise UpsamplerFileError(f"upsampler file '{path}' does not exist")
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise UpsamplerFileError(f"'{name}' is not a safetensors file (only {size} bytes)")
        (n,) = struct.unpack("<Q", head)
        if n == 0 or n > min(size - 8, 100_000_000):
            raise UpsamplerFileError(f"'{name}' is not a safetensors file (bad header length {n} for a "
                                     f"{size}-byte file); convert official .pth weights with "
                                     "scripts/convert_official_upsamplers.py")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UpsamplerFileError(f"'{name}' is not a safetensors file (header is not JSON: {e})") from None
    if not isinstance(header, dict):
        raise UpsamplerFileError(f"'{name}' is not a safetensors file (header is not a JSON object)")
    meta = header.get("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise UpsamplerFileError(f"'{name}' is corrupt: its '__metadata__' is not a map of strings")
    end = max((_tensor_bytes(name, k, v)[1] for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        raise UpsamplerFileError(f"'{name}' is truncated: tensors need {8 + n + end} bytes, the file has {size}. "
                                 "Copy or download it again.")
    return header


def read_info(path: str) -> UpsamplerInfo:
    """The metadata of a set without loading its tensors."""
    name = os.path.basename(path)
    meta = _read_header(path).get("__metadata__") or {}
    if meta.get("format") != FORMAT_TAG:
        raise UpsamplerFileError(f"'{name}' is a safetensors file but not a Self-Cascade upsampler set "
                                 f"(metadata 'format' is {meta.get('format')!r}, expected {FORMAT_TAG!r})")
    version = meta.get("format_version", "?")
    if version != str(FORMAT_VERSION):
        raise UpsamplerFileError(f"'{name}' has format version {version}; this pack reads version "
                                 f"{FORMAT_VERSION}. Update the pack or re-export the file.")
    try:
        return UpsamplerInfo.from_json(json.loads(meta["info"]))
    except (KeyError, TypeError, ValueError) as e:
        raise UpsamplerFileError(f"'{name}' has unreadable 'info' metadata ({type(e).__name__}: {e})") from None


def load_upsamplers(path: str, device: str | torch.device = "cpu") -> UpsamplerSet:
    """Load a set written by :func:`save_upsamplers`, checking tensors against its metadata."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    name = os.path.basename(path)
    info = read_info(path)
    try:
        with torch.device("meta"):  # shapes only; the weights are assigned from the file below
            uset = UpsamplerSet(info)
    except (ValueError, TypeError) as e:
        raise UpsamplerFileError(f"'{name}': metadata describes an impossible set ({e})") from None
    try:
        tensors = load_file(path, device=str(device))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise UpsamplerFileError(f"'{name}' is corrupt: {e}") from None
    expected = uset.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise UpsamplerFileError(f"'{name}' does not match its metadata ({info.variant}, {len(info.taps)} taps): "
                                 f"missing tensors {missing[:5]}{'...' if len(missing) > 5 else ''}, "
                                 f"unexpected tensors {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}")
    for key, ref in expected.items():
        t = tensors[key]
        if tuple(t.shape) != tuple(ref.shape):
            raise UpsamplerFileError(f"'{name}': tensor {key} has shape {tuple(t.shape)}, expected {tuple(ref.shape)}")
        if not t.is_floating_point():
            raise UpsamplerFileError(f"'{name}': tensor {key} has dtype {t.dtype}, expected floating-point weights "
                                     "(the file is damaged or not an upsampler set)")
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise UpsamplerFileError(f"'{name}': tensor {key} contains NaN or Inf weights (a diverged training run?)")
    uset.load_state_dict(tensors, assign=True)
    return uset.to(device)


def check_compatible(uset: UpsamplerSet, taps: list[Tap], emb_dim: int, family: str | None = None) -> None:
    """Raise IncompatibleUpsamplersError when ``uset`` cannot serve a model with these taps."""
    info = uset.info
    if family is not None and info.family and info.family != family:
        raise IncompatibleUpsamplersError(
            f"these upsamplers were trained for a {info.family} model, but the model is {family}. "
            f"Load a set trained for {family}.")
    have = [(t.block, t.channels) for t in info.taps]
    want = [(t.block, t.channels) for t in taps]
    if have != want:
        raise IncompatibleUpsamplersError(
            f"upsampler taps {have} do not match the model's taps {want} (blocks, channels); "
            "the set was made for a different UNet.")
    if info.emb_dim != emb_dim:
        raise IncompatibleUpsamplersError(
            f"upsamplers expect a time embedding of width {info.emb_dim}, the model's is {emb_dim}.")
