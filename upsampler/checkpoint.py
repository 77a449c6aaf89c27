"""Training checkpoints and atomic writes (pure torch + safetensors, no pickle).

A checkpoint is ONE safetensors file: the upsampler weights (``uset.*``), the optimizer's
tensors (``optim.*``) and the RNG states (``rng.*``); everything else (step count, losses,
optimizer hyper-parameters, the training config) is JSON inside the file's metadata. One file
means one ``os.replace``: a crash can never pair new weights with an old step count.
"""
from __future__ import annotations

import errno
import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

#: Metadata key holding the JSON part of a checkpoint.
META_KEY = "self_cascade_train"
CKPT_SUFFIX = ".ckpt.safetensors"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.+-]*$")


def check_save_name(name: str) -> str:
    """A bare file stem: no path separators, no ``..``, no leading dot; returns it stripped.

    Raises ValueError naming the problem (callers turn it into a user-facing error).
    """
    stem = (name or "").strip()
    if stem.endswith(".safetensors"):
        stem = stem[: -len(".safetensors")]
    if not stem:
        raise ValueError("save_name is empty; give a plain file name such as 'my_upsamplers'.")
    if "/" in stem or "\\" in stem or os.sep in stem or (os.altsep and os.altsep in stem):
        raise ValueError(f"save_name {name!r} contains a path separator; give a plain file name (it is saved "
                         "in models/self_cascade/).")
    if ".." in stem:
        raise ValueError(f"save_name {name!r} contains '..'; give a plain file name.")
    if not _NAME_RE.match(stem):
        raise ValueError(f"save_name {name!r} may use only letters, digits, space, '_', '-', '+', '.' and must "
                         "start with a letter or digit.")
    return stem


def current_umask() -> int:
    """The process umask (read from /proc where possible, so it is never changed, even briefly)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class WriteFailedError(OSError):
    """A file could not be written (disk full, I/O error, read-only folder). Nothing at the path
    changed: the previous file, if any, is intact and no temp file is left. The message names the
    path, the cause and what to do."""


_OS_ERROR = re.compile(r"os error (\d+)")  # how safetensors' Rust writer reports an OS error
_ADVICE = {
    errno.ENOSPC: "free space on that drive (or choose a folder on another drive)",
    errno.EDQUOT: "free space within your disk quota",
    errno.EROFS: "the folder is on a read-only file system: make it writable or choose another folder",
    errno.EACCES: "make the folder writable for the user running ComfyUI, or choose another folder",
    errno.EPERM: "make the folder writable for the user running ComfyUI, or choose another folder",
    errno.EIO: "the drive reported an I/O error: check the drive (and its free space)",
}


def _os_errno(exc: BaseException) -> int | None:
    """The errno of an OSError, or of a writer error that wraps one (safetensors' 'os error 28')."""
    if isinstance(exc, OSError):
        return exc.errno or errno.EIO
    m = _OS_ERROR.search(str(exc))
    return int(m.group(1)) if m else None


def _failed(path: str, exc: BaseException, code: int) -> WriteFailedError:
    cause = os.strerror(code) if code else str(exc)
    advice = _ADVICE.get(code, "check that the folder exists, is writable and has free space")
    resume = (" A training run continues from its last checkpoint written before this one when you run it "
              "again with resume on.") if path.endswith(CKPT_SUFFIX) else ""
    return WriteFailedError(code, f"could not write '{path}': {cause}. The previous file there (if any) is "
                                  f"unchanged and no partial file was left. To fix: {advice}, then run again.{resume}")


def _fsync_folder(folder: str) -> None:
    """Make the rename itself durable (best effort: some file systems cannot fsync a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` for a temp file in the same folder, fsync it, then ``os.replace``.

    The one path by which the pack writes files. If any stage fails (creating the temp file,
    ``write``, chmod, fsync, the rename), the temp file is removed and an existing ``path`` is left
    untouched; an OS-level failure (ENOSPC, EIO, a read-only folder; also safetensors' wrapped
    'os error N') is raised as :class:`WriteFailedError` naming the path and what to do. The file
    gets the mode a plain ``open(path, "w")`` would give (0o666 minus the umask), not mkstemp's
    private 0o600, so a ComfyUI running as another user can read it.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~current_umask())
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except Exception as exc:
        code = _os_errno(exc)
        if code is None or isinstance(exc, WriteFailedError):
            raise
        raise _failed(path, exc, code) from exc
    finally:
        if tmp is not None:
            try:
                os.remove(tmp)
            except OSError:
                pass
    _fsync_folder(folder)


@dataclass
class Checkpoint:
    """Everything needed to continue a run exactly where it stopped."""

    step: int
    weights: dict[str, torch.Tensor]
    optimizer: dict
    rng: dict[str, torch.Tensor]
    losses: list[float] = field(default_factory=list)
    config: dict = field(default_factory=dict)


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors (``optim.<idx>.<key>``) and JSON."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"optim.{idx}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for idx, values in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(path: str, ckpt: Checkpoint) -> None:
    """Write ``ckpt`` atomically to ``path`` (a ``.ckpt.safetensors`` file)."""
    from safetensors.torch import save_file

    tensors = {f"uset.{k}": v.detach().contiguous().cpu() for k, v in ckpt.weights.items()}
    opt_tensors, opt_meta = _flatten_optimizer(ckpt.optimizer)
    tensors.update(opt_tensors)
    tensors.update({f"rng.{k}": v.contiguous().cpu() for k, v in ckpt.rng.items()})
    meta = {"step": ckpt.step, "losses": ckpt.losses, "optimizer": opt_meta, "config": ckpt.config}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={META_KEY: json.dumps(meta)}))


def load_checkpoint(path: str) -> Checkpoint:
    """Read a checkpoint written by :func:`save_checkpoint` (ValueError if it is not one)."""
    from safetensors import safe_open

    with safe_open(path, framework="pt", device="cpu") as fh:
        raw = (fh.metadata() or {}).get(META_KEY)
        if raw is None:
            raise ValueError(f"{path} is not a Self-Cascade training checkpoint (no '{META_KEY}' metadata).")
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    meta = json.loads(raw)
    groups: dict[str, dict[str, torch.Tensor]] = {"uset": {}, "optim": {}, "rng": {}}
    for name, value in tensors.items():
        head, rest = name.split(".", 1)
        if head == "optim":
            groups["optim"][name] = value
        else:
            groups[head][rest] = value
    return Checkpoint(step=int(meta["step"]), weights=groups["uset"],
                      optimizer=_unflatten_optimizer(groups["optim"], meta["optimizer"]),
                      rng=groups["rng"], losses=[float(x) for x in meta.get("losses", [])],
                      config=meta.get("config", {}))
