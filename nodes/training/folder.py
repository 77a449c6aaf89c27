"""A training folder for the command-line trainer: scan, check, encode once, cache the latents.

Large folders are never held as pixels: rank 0 scans the folder (image sizes from the file
headers, same-name captions) and every process gets that list; images without a cached latent
are encoded by the processes in turn (image i by rank i mod world size), gathered to every
process, and written to the cache by rank 0 only. Cached pairs are read by rank 0 and sent to
every process, so the cache need not be on a shared disk. A cache entry is keyed by the image's
name, size and modification time, the VAE's identity and the settings that shape the latents
(scale, latent cell, pivot mode); a changed image or VAE is encoded again.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...upsampler.checkpoint import atomic_write
from ..common import SelfCascadeError
from .config import TrainConfig
from .data import list_images, read_caption, read_image
from .pairs import EncodedImage, encode_image
from .parallel import Parallel

#: Cached pairs sent from rank 0 per broadcast (bounds the temporary memory of one message).
_CHUNK = 64


@dataclass
class FolderEntry:
    """One usable image of the folder."""

    name: str
    width: int
    height: int
    caption: str | None
    key: str  # cache key


def scan_folder(folder: str, cfg: TrainConfig, vae_id: str, *, skip_unreadable: bool = False,
                caption_extension: str = ".txt") -> tuple[list[FolderEntry], list[str]]:
    """Every image of ``folder`` (sorted) with its caption; returns (entries, warnings).

    Errors (SelfCascadeError, nothing written): not a folder, no images, images smaller than the
    crop (all listed), unreadable files (all listed) unless ``skip_unreadable`` (then each is a warning).
    """
    from PIL import Image

    if not os.path.isdir(folder):
        raise SelfCascadeError(f"training folder {folder!r} does not exist or is not a folder.")
    names = list_images(folder)
    if not names:
        raise SelfCascadeError(f"training folder {folder!r} has no images (.png .jpg .jpeg .webp .bmp .tif .tiff).")
    entries, bad, small = [], [], []
    for name in names:
        full = os.path.join(folder, name)
        try:
            with Image.open(full) as im:
                im.verify()  # header and structure; pixels are decoded when encoding
            with Image.open(full) as im:
                w, h = im.size
                if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF rotation by 90 degrees: read_image turns it
                    w, h = h, w
        except Exception as exc:  # PIL raises many types for broken files
            bad.append(f"{name} ({type(exc).__name__}: {exc})")
            continue
        if w < cfg.width or h < cfg.height:
            small.append(f"{name} ({w}x{h})")
            continue
        st = os.stat(full)
        caption = read_caption(full, extension=caption_extension)
        key_src = f"{name}|{st.st_size}|{st.st_mtime_ns}|{vae_id}|{cfg.scale}|{cfg.latent_cell}|{cfg.pivot_mode}"
        entries.append(FolderEntry(name, w, h, caption, hashlib.sha256(key_src.encode()).hexdigest()[:32]))
    if small:
        raise SelfCascadeError(f"{len(small)} image(s) are smaller than the training size {cfg.width}x{cfg.height} px: "
                               + ", ".join(small) + ". Remove them, use larger images, or lower --resolution.")
    warnings = []
    if bad and not skip_unreadable:
        raise SelfCascadeError(f"{len(bad)} file(s) in {folder!r} could not be read: " + "; ".join(bad)
                               + ". Fix or remove them, or pass --skip_unreadable_images to skip them with a warning.")
    warnings += [f"skipped unreadable image {b}" for b in bad]
    if not entries:
        raise SelfCascadeError(f"training folder {folder!r} has no readable images.")
    return entries, warnings


def _cache_file(cache_dir: str, key: str) -> str:
    return os.path.join(cache_dir, key + ".safetensors")


def _read_cached(cache_dir: str, key: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    from safetensors.torch import load_file

    t = load_file(_cache_file(cache_dir, key))
    return t["x0"], t.get("pivot")


def _write_cached(cache_dir: str, entry: FolderEntry, x0: torch.Tensor, pivot: torch.Tensor | None) -> None:
    from safetensors.torch import save_file

    tensors = {"x0": x0.contiguous()} | ({"pivot": pivot.contiguous()} if pivot is not None else {})
    atomic_write(_cache_file(cache_dir, entry.key),
                 lambda tmp: save_file(tensors, tmp, metadata={"image": entry.name, "key": entry.key}))


def cached_keys(cache_dir: str | None) -> set[str]:
    """The keys present in the latent cache (call on rank 0)."""
    if not cache_dir or not os.path.isdir(cache_dir):
        return set()
    return {f[: -len(".safetensors")] for f in os.listdir(cache_dir) if f.endswith(".safetensors")}


def encode_folder(folder: str, entries: list[FolderEntry], encode: Callable | None, cfg: TrainConfig, channels: int,
                  cond_of: Callable[[FolderEntry], int], *, cache_dir: str | None, parallel: Parallel,
                  skip_unreadable: bool = False, progress: Callable[[int], None] | None = None,
                  have: set[str] | None = None) -> tuple[list[EncodedImage], list[str]]:
    """Encoded pairs for ``entries`` (cached ones read, the rest encoded and cached); every process
    returns the same list. Returns (items, warnings); an image that fails to decode stops the run
    with every such file listed, unless ``skip_unreadable`` (then it is left out with a warning).
    ``have``: the cached keys as rank 0 found them (read here when None); ``encode`` may be None
    when every entry is cached."""
    have = parallel.from_rank0(lambda: cached_keys(cache_dir)) if have is None else have
    missing = [i for i, e in enumerate(entries) if e.key not in have]
    encoded, failed = {}, {}
    for i in missing[parallel.rank::parallel.world_size]:
        try:
            img = read_image(os.path.join(folder, entries[i].name))
        except Exception as exc:  # PIL raises many types for broken files
            failed[i] = f"{entries[i].name} ({type(exc).__name__}: {exc})"
            continue
        with torch.inference_mode(False):
            encoded[i] = encode_image(img, encode, cfg, channels, entries[i].name)
        if progress is not None:
            progress(1)
    for part_encoded, part_failed in parallel.gather((encoded, failed)):
        encoded.update(part_encoded)
        failed.update(part_failed)
    if failed and not skip_unreadable:
        raise SelfCascadeError(f"{len(failed)} image(s) could not be decoded: " + "; ".join(failed[i] for i in
                               sorted(failed)) + ". Fix or remove them, or pass --skip_unreadable_images.")
    if cache_dir and parallel.is_writer:
        os.makedirs(cache_dir, exist_ok=True)
        for i in sorted(encoded):
            _write_cached(cache_dir, entries[i], *encoded[i])
    cached = [i for i, e in enumerate(entries) if e.key in have]
    for start in range(0, len(cached), _CHUNK):
        chunk = cached[start:start + _CHUNK]
        encoded.update(zip(chunk, parallel.from_rank0(lambda c=chunk: [_read_cached(cache_dir, entries[i].key)
                                                                          for i in c]), strict=True))
    items = [EncodedImage(x0=encoded[i][0], pivot=encoded[i][1], cond=cond_of(e))
             for i, e in enumerate(entries) if i in encoded]
    return items, [f"skipped undecodable image {failed[i]}" for i in sorted(failed)]
