"""Training data for the upsampler trainer: images from an IMAGE batch or a folder, random crops.

Folder input is confined to ComfyUI's input directory (no absolute paths, no ``..``, no
symlinks that lead outside). Grayscale / RGBA / palette images become RGB; unreadable files
and images smaller than the crop are listed in one error so the user can fix them at once.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from .common import SelfCascadeError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


@dataclass
class TrainingImages:
    """Images as ``(H, W, 3)`` float 0..1 CPU tensors, with optional captions and display names."""

    images: list[torch.Tensor] = field(default_factory=list)
    captions: list[str | None] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def extend(self, other: TrainingImages) -> None:
        self.images += other.images
        self.captions += other.captions
        self.names += other.names

    def __len__(self) -> int:
        return len(self.images)


def to_rgb(img: torch.Tensor) -> torch.Tensor:
    """``(H, W, C)`` with C in 1..4 -> ``(H, W, 3)`` (grayscale repeated, alpha dropped)."""
    channels = img.shape[-1]
    if channels == 3:
        return img
    if channels in (1, 2):
        return img[..., :1].expand(*img.shape[:-1], 3).contiguous()
    if channels == 4:
        return img[..., :3].contiguous()
    raise SelfCascadeError(f"an image has {channels} channels; expected 1 (gray), 3 (RGB) or 4 (RGBA).")


def from_image_input(images) -> TrainingImages:
    """A ComfyUI IMAGE ``(N, H, W, C)`` or a list of them (different sizes allowed)."""
    batches = images if isinstance(images, (list, tuple)) else [images]
    out = TrainingImages()
    for b, batch in enumerate(batches):
        if not torch.is_tensor(batch) or batch.ndim not in (3, 4):
            raise SelfCascadeError("'images' must be an IMAGE (N, H, W, 3) or a list of them.")
        batch = batch.unsqueeze(0) if batch.ndim == 3 else batch
        for i in range(batch.shape[0]):
            out.images.append(to_rgb(batch[i].detach().float().cpu()).clamp(0, 1))
            out.captions.append(None)
            out.names.append(f"images[{b}][{i}]" if len(batches) > 1 else f"images[{i}]")
    return out


def resolve_input_folder(folder: str, input_dir: str) -> str:
    """The real path of ``folder`` inside ``input_dir``; SelfCascadeError for any escape."""
    rel = (folder or "").strip()
    if os.path.isabs(rel) or rel.startswith(("/", "\\")) or (len(rel) > 1 and rel[1] == ":"):
        raise SelfCascadeError(f"folder {folder!r} is an absolute path; give a subfolder of ComfyUI's input "
                               "directory, e.g. 'train_images'.")
    parts = rel.replace("\\", "/").split("/")
    if ".." in parts:
        raise SelfCascadeError(f"folder {folder!r} contains '..'; give a subfolder of ComfyUI's input directory.")
    root = os.path.realpath(input_dir)
    path = os.path.realpath(os.path.join(root, rel))
    if os.path.commonpath([root, path]) != root:
        raise SelfCascadeError(f"folder {folder!r} leads outside ComfyUI's input directory (symlink?); "
                               "copy the images into a real subfolder of input/.")
    if not os.path.isdir(path):
        raise SelfCascadeError(f"folder {folder!r} does not exist under ComfyUI's input directory ({root}).")
    return path


def load_folder(folder: str, input_dir: str) -> TrainingImages:
    """Read every image in ``input_dir/folder`` (sorted), with same-name ``.txt`` captions if present."""
    from PIL import Image, ImageOps

    path = resolve_input_folder(folder, input_dir)
    root = os.path.realpath(input_dir)
    files = sorted(f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
        raise SelfCascadeError(f"folder {folder!r} has no images ({', '.join(IMAGE_EXTENSIONS)}); put training "
                               "images in it or connect an IMAGE to 'images'.")
    out, bad = TrainingImages(), []
    for name in files:
        full = os.path.join(path, name)
        if os.path.commonpath([root, os.path.realpath(full)]) != root:
            bad.append(f"{name} (symlink outside the input directory)")
            continue
        try:
            with Image.open(full) as im:
                im = ImageOps.exif_transpose(im)
                if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                    im = im.convert("RGBA").convert("RGB")
                rgb = im.convert("RGB")
                arr = np.asarray(rgb, dtype=np.float32) / 255.0
        except Exception as exc:  # PIL raises many types for broken files
            bad.append(f"{name} ({type(exc).__name__}: {exc})")
            continue
        caption = None
        txt = os.path.splitext(full)[0] + ".txt"
        if os.path.isfile(txt) and os.path.commonpath([root, os.path.realpath(txt)]) == root:
            with open(txt, encoding="utf-8", errors="replace") as fh:
                caption = fh.read().strip()
        out.images.append(torch.from_numpy(arr.copy()))
        out.captions.append(caption)
        out.names.append(name)
    if bad:
        raise SelfCascadeError(f"{len(bad)} file(s) in folder {folder!r} could not be read: " + "; ".join(bad)
                               + ". Fix or remove them and run again.")
    return out


def check_sizes(data: TrainingImages, height: int, width: int) -> None:
    """Every image must be at least the crop size; the error lists all that are not."""
    if len(data) == 0:
        raise SelfCascadeError("no training images: connect an IMAGE to 'images' or name a folder under input/.")
    small = [f"{n} ({img.shape[1]}x{img.shape[0]})" for n, img in zip(data.names, data.images, strict=True)
             if img.shape[0] < height or img.shape[1] < width]
    if small:
        raise SelfCascadeError(f"{len(small)} image(s) are smaller than the training size {width}x{height} px: "
                               + ", ".join(small) + ". Remove them, use larger images, or lower the size/scale.")


def random_crop(img: torch.Tensor, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """A random ``(height, width)`` crop of an ``(H, W, 3)`` image (positions from ``generator``)."""
    top = int(torch.randint(0, img.shape[0] - height + 1, (1,), generator=generator))
    left = int(torch.randint(0, img.shape[1] - width + 1, (1,), generator=generator))
    return img[top:top + height, left:left + width]
