"""Things every node of the pack shares: the pack key, the model folder, custom types, errors."""
from __future__ import annotations

import logging
import os

from comfy_api.latest import io

logger = logging.getLogger(__name__)

#: One key for every wrapper, callback and attachment the pack puts on a ModelPatcher, so that
#: applying a node twice replaces (never stacks) and others can find or remove our patches.
PACK_KEY = "self_cascade"
#: Node category root (lowercase, hierarchical).
CATEGORY = "sampling/self_cascade"
#: Folder under ComfyUI's models directory where trained upsampler sets live.
MODEL_FOLDER = "self_cascade"
MODEL_EXTENSIONS = {".safetensors"}

#: The trained set of time-aware feature upsamplers travelling between nodes.
Upsamplers = io.Custom("SELF_CASCADE_UPSAMPLERS")


class SelfCascadeError(ValueError):
    """A user-facing error: the message names the input that is wrong and what to do."""


def register_model_folder() -> str:
    """Register ``models/self_cascade/`` (``.safetensors`` only) with ComfyUI's folder_paths.

    Idempotent; returns the folder path. Users drop trained upsampler files there.
    """
    import folder_paths

    path = os.path.join(folder_paths.models_dir, MODEL_FOLDER)
    known = folder_paths.folder_names_and_paths.get(MODEL_FOLDER)
    if known is None:
        folder_paths.folder_names_and_paths[MODEL_FOLDER] = ([path], set(MODEL_EXTENSIONS))
    else:
        if path not in known[0]:
            known[0].append(path)
        known[1].update(MODEL_EXTENSIONS)
    return path


def model_folder_path() -> str:
    """The first registered ``self_cascade`` model folder, created if missing (for writers)."""
    import folder_paths

    register_model_folder()
    path = folder_paths.get_folder_paths(MODEL_FOLDER)[0]
    os.makedirs(path, exist_ok=True)
    return path
