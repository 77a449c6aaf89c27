"""Things every node of the pack shares: the pack key, the model folder, custom types, errors,
and the input ranges and tooltips that more than one node uses (defined once, here)."""
from __future__ import annotations

import os

from comfy_api.latest import io

from ..upsampler.modules import DEFAULT_END_TIMESTEP
from ..upsampler.renoise import DEFAULT_K, T_STEPS
from .compat import core_sampling_category

__all__ = ["CATEGORY", "DEFAULT_END_TIMESTEP", "DEFAULT_K", "END_TIMESTEP_MAX", "K_MAX", "K_MIN", "K_TOOLTIP",
           "LATENT_CELL", "MODEL_FOLDER", "PACK_KEY", "SCALE_MAX", "SEED_MAX", "SIZE_MAX", "SEED_TOOLTIP", "STEPS_MAX",
           "STEPS_TOOLTIP", "STRENGTH_MAX", "SelfCascadeError", "T_STEPS", "Upsamplers", "model_folder_path",
           "register_model_folder"]

#: One key for every wrapper, callback and attachment the pack puts on a ModelPatcher, so that
#: applying a node twice replaces (never stacks) and others can find or remove our patches.
PACK_KEY = "self_cascade"
#: Node category root (lowercase, hierarchical), next to core's KSampler: "sampling/self_cascade" on
#: ComfyUI 0.3.75, "model/sampling/self_cascade" where core's menus moved under model/ (nodes/compat.py).
CATEGORY = f"{core_sampling_category()}/self_cascade"
#: Folder under ComfyUI's models directory where trained upsampler sets live.
MODEL_FOLDER = "self_cascade"
MODEL_EXTENSIONS = {".safetensors"}
#: Spatial downscale of SD-family VAEs: latent cells per pixel side.
LATENT_CELL = 8

# Widget ranges shared by several nodes (saved workflows depend on them: only ever widen a range).
#: K is a timestep strictly inside (0, T_STEPS): the widget spans the whole-number timesteps 1..999.
K_MIN, K_MAX = 1.0, float(T_STEPS - 1)
#: end_timestep: 0..1000 (1000 = the upsamplers never act; Apply Upsamplers always allowed it).
END_TIMESTEP_MAX = float(T_STEPS)
#: Weight of the upsampled pivot features (1 = as trained).
STRENGTH_MAX = 4.0
SCALE_MAX = 8.0
#: Largest image side in pixels of every width/height widget.
SIZE_MAX = 16384
STEPS_MAX = 10000
SEED_MAX = 0xFFFFFFFFFFFFFFFF

K_TOOLTIP = ("The paper's K: the timestep (out of 1000) the upsampled pivot is diffused back to before "
             "denoising K -> 0. 700 = the paper's default (about denoise 0.7: of 50 'normal' steps 36 run). "
             "Lower keeps more of the pivot, higher lets the model change more. Must lie in (0, 1000). Mapped with "
             "the model's own schedule (flow models: the point K/1000 of the way through it).")
STEPS_TOOLTIP = ("Length of the WHOLE schedule from pure noise to 0. Only the part from K down to 0 runs "
                 "(50 steps at K=700 execute 35-36 depending on the scheduler, as in the paper) - unlike KSampler's "
                 "'denoise', which keeps the executed count fixed. Executed / steps is the denoise equivalent.")
SEED_TOOLTIP = ("Noise seed. Batch entry i uses its own generator seeded with seed + batch_index[i] (seed + i "
                "without a batch_index), so a batch of 3 equals three single runs with seeds s, s+1, s+2. "
                "This differs from KSampler, which draws the whole batch from one generator.")

#: The trained set of time-aware feature upsamplers travelling between nodes.
Upsamplers = io.Custom("SELF_CASCADE_UPSAMPLERS")


class SelfCascadeError(ValueError):
    """A user-facing error: the message names the input that is wrong and what to do."""


def register_model_folder() -> str:
    """Register ``models/self_cascade/`` (``.safetensors`` only) with ComfyUI's folder_paths.

    Called once, when ComfyUI imports the pack (its ``__init__``); idempotent; returns the folder path.
    Users drop trained upsampler files there.
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

    path = folder_paths.get_folder_paths(MODEL_FOLDER)[0]
    os.makedirs(path, exist_ok=True)
    return path
