"""Tuned-path nodes: load a trained upsampler set and apply it to a MODEL (the paper's "Ours-T")."""
from __future__ import annotations

import logging
import os

from comfy_api.latest import io

from ..upsampler.checkpoint import CKPT_SUFFIX
from ..upsampler.convert import PTH_SUFFIX, PickleRefusedError, cache_path, load_official_cached
from ..upsampler.fileformat import UpsamplerFileError, load_upsamplers
from .checks import check_end_timestep, check_strength
from .common import (
    CATEGORY,
    DEFAULT_END_TIMESTEP,
    END_TIMESTEP_MAX,
    MODEL_FOLDER,
    STRENGTH_MAX,
    SelfCascadeError,
    Upsamplers,
)
from .managed import upsampler_patcher
from .patch import apply_upsamplers
from .pivot import PIVOT_KEY, check_latent

logger = logging.getLogger(__name__)

TUNED = f"{CATEGORY}/tuned"


def load_named(name: str):
    """Load ``models/self_cascade/<name>``; every error names the file.

    An official ``.pth`` is converted on first use (weights-only unpickling) and the result cached
    beside it as ``<stem>.converted.safetensors``; later loads read the cache.
    """
    import folder_paths

    try:
        path = folder_paths.get_full_path_or_raise(MODEL_FOLDER, name)
    except FileNotFoundError:
        raise SelfCascadeError(f"upsampler file '{name}' is not in models/{MODEL_FOLDER}/; "
                               "put the .safetensors (or the official upsampler_only.pth) there and refresh.") from None
    try:
        if name.lower().endswith(PTH_SUFFIX):
            uset, converted = load_official_cached(path)
            if converted:
                logger.info("Self-Cascade: converted %s (weights-only) and cached it as %s", name,
                            os.path.basename(cache_path(path)))
            return uset
        return load_upsamplers(path)
    except PickleRefusedError as e:
        raise SelfCascadeError(str(e)) from None
    except (UpsamplerFileError, ValueError) as e:
        raise SelfCascadeError(f"'{name}': {e}" if name not in str(e) else str(e)) from None


def official_files() -> list[str]:
    """Official ``.pth`` files in the registered models/self_cascade folders (relative names)."""
    import folder_paths

    found: set[str] = set()
    for folder in folder_paths.get_folder_paths(MODEL_FOLDER):
        if os.path.isdir(folder):
            files, _ = folder_paths.recursive_search(folder, excluded_dir_names=[".git"])
            found.update(folder_paths.filter_files_extensions(files, {PTH_SUFFIX}))
    return sorted(found)


def upsampler_files(names: list[str], pth_names: list[str] = ()) -> list[str]:
    """Upsampler sets among the folder's files: ``.safetensors`` sets (not training checkpoints
    ``*.ckpt.safetensors``, not the converted cache of a listed ``.pth``) and official ``.pth`` files."""
    caches = {cache_path(n) for n in pth_names}
    return sorted({n for n in names if not n.endswith(CKPT_SUFFIX) and n not in caches} | set(pth_names))


class SelfCascadeUpsamplerLoader(io.ComfyNode):
    """Load a trained set of time-aware feature upsamplers from models/self_cascade/."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        import folder_paths

        return io.Schema(
            node_id="SelfCascadeUpsamplerLoader",
            display_name="Self-Cascade Upsampler Loader",
            category=TUNED,
            description="Loads a file of trained upsamplers for the tuned cascade: use it when you have a set "
                        "you trained, or the official SDXL upsampler_only.pth, in models/self_cascade/; connect it "
                        "to a Stage's upsamplers.",
            inputs=[io.Combo.Input("upsampler_name",
                                   options=upsampler_files(folder_paths.get_filename_list(MODEL_FOLDER), official_files()),
                                   tooltip="A set trained by SelfCascadeTrainUpsamplers, or the official SDXL "
                                           "upsampler_only.pth (converted on first load, cached beside it).")],
            outputs=[Upsamplers.Output(display_name="upsamplers",
                                       tooltip="The upsampler set; connect to Apply Upsamplers or Stage.")],
        )

    @classmethod
    def execute(cls, upsampler_name) -> io.NodeOutput:
        uset = load_named(upsampler_name)
        i = uset.info
        logger.info("Self-Cascade: loaded %s (%s, %s variant, %d taps, %d params)", upsampler_name,
                    i.family, i.variant, len(i.taps), uset.num_params())
        return io.NodeOutput(upsampler_patcher(uset))  # built once: ComfyUI caches it with the node


class SelfCascadeApplyUpsamplers(io.ComfyNode):
    """Patch a MODEL so that each step adds the upsampled pivot features (Eq. 7-8)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SelfCascadeApplyUpsamplers",
            display_name="Self-Cascade Apply Upsamplers",
            category=TUNED,
            description="Makes a model follow the previous, smaller image more closely while it samples at the "
                        "larger size: use it with your own KSampler instead of a Stage. It adds the previous "
                        "stage's UNet features, upsampled by trained upsamplers, into the high-resolution "
                        "denoising.",
            inputs=[
                io.Model.Input("model", tooltip="An SD1.x/2.x/SDXL-style UNet model (DiT/Flux: use the tuning-free path)."),
                Upsamplers.Input("upsamplers", tooltip="From Self-Cascade Upsampler Loader."),
                io.Latent.Input("pivot", tooltip="The previous stage's latent, or the output of Self-Cascade Pivot "
                                                 "Upsample (its stored original is used)."),
                io.Float.Input("strength", default=1.0, min=0.0, max=STRENGTH_MAX, step=0.01,
                               tooltip="Scale of the added features; 0 = the plain model."),
                io.Float.Input("end_timestep", default=DEFAULT_END_TIMESTEP, min=0.0, max=END_TIMESTEP_MAX, step=1.0,
                               tooltip="The patch is on while the model timestep is above this (0..1000); "
                                       "the last steps run the plain model (paper: 100)."),
            ],
            outputs=[io.Model.Output(tooltip="The patched model (a clone; the input is unchanged).")],
        )

    @classmethod
    def execute(cls, model, upsamplers, pivot, strength, end_timestep) -> io.NodeOutput:
        samples = pivot.get(PIVOT_KEY) if isinstance(pivot, dict) else None
        if samples is None:
            samples = check_latent(pivot, "pivot")
        strength, end_timestep = check_strength(strength), check_end_timestep(end_timestep)
        return io.NodeOutput(apply_upsamplers(model, upsamplers, samples, strength, end_timestep))


NODES = (SelfCascadeUpsamplerLoader, SelfCascadeApplyUpsamplers)
