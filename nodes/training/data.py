"""Training images: an IMAGE batch or a folder of image files with optional same-name ``.txt`` captions.

Folder input is confined to ComfyUI's input directory (no absolute paths, no ``..``, no
symlinks that lead outside). Grayscale / RGBA / palette images become RGB; unreadable files
and images smaller than the crop are listed in one error so the user can fix them at once.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch

from ..common import SelfCascadeError

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


def list_images(path: str) -> list[str]:
    """The image file names in ``path`` (sorted; by extension, case-insensitive)."""
    return sorted(f for f in os.listdir(path) if f.lower().endswith(IMAGE_EXTENSIONS))


def read_image(path: str) -> torch.Tensor:
    """One image file as ``(H, W, 3)`` float 0..1 (EXIF rotation applied; alpha dropped; grayscale
    and palette images become RGB). Raises whatever PIL raises for a broken file."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
            im = im.convert("RGBA").convert("RGB")
        arr = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(arr.copy())


def read_caption(image_path: str, root: str | None = None, extension: str = ".txt") -> str | None:
    """The same-name caption file (``.txt``) next to an image (stripped), or None; with ``root``,
    only a file inside it."""
    txt = os.path.splitext(image_path)[0] + extension
    if not os.path.isfile(txt):
        return None
    if root is not None and os.path.commonpath([root, os.path.realpath(txt)]) != root:
        return None
    with open(txt, encoding="utf-8", errors="replace") as fh:
        return fh.read().strip()


def load_folder(folder: str, input_dir: str) -> TrainingImages:
    """Read every image in ``input_dir/folder`` (sorted), with same-name ``.txt`` captions if present."""
    path = resolve_input_folder(folder, input_dir)
    root = os.path.realpath(input_dir)
    files = list_images(path)
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
            img = read_image(full)
        except Exception as exc:  # PIL raises many types for broken files
            bad.append(f"{name} ({type(exc).__name__}: {exc})")
            continue
        out.images.append(img)
        out.captions.append(read_caption(full, root))
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
