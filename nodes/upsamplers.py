"""Tuned-path nodes: load a trained upsampler set and apply it to a MODEL (the paper's "Ours-T")."""
from __future__ import annotations

import logging

from comfy_api.latest import io

from ..upsampler.checkpoint import CKPT_SUFFIX
from ..upsampler.fileformat import UpsamplerFileError, load_upsamplers
from .common import CATEGORY, MODEL_FOLDER, SelfCascadeError, Upsamplers, register_model_folder
from .patch import apply_upsamplers
from .pivot import PIVOT_KEY, check_latent

logger = logging.getLogger(__name__)

TUNED = f"{CATEGORY}/tuned"


def load_named(name: str):
    """Load ``models/self_cascade/<name>``; every error names the file."""
    import folder_paths

    register_model_folder()
    try:
        path = folder_paths.get_full_path_or_raise(MODEL_FOLDER, name)
    except FileNotFoundError:
        raise SelfCascadeError(f"upsampler file '{name}' is not in models/{MODEL_FOLDER}/; "
                               "put the .safetensors there and refresh.") from None
    try:
        return load_upsamplers(path)
    except UpsamplerFileError as e:
        raise SelfCascadeError(str(e)) from None


def upsampler_files(names: list[str]) -> list[str]:
    """Upsampler sets among the folder's files (training checkpoints ``*.ckpt.safetensors`` are not)."""
    return [n for n in names if not n.endswith(CKPT_SUFFIX)]


class SelfCascadeUpsamplerLoader(io.ComfyNode):
    """Load a trained set of time-aware feature upsamplers from models/self_cascade/."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        import folder_paths

        register_model_folder()
        return io.Schema(
            node_id="SelfCascadeUpsamplerLoader",
            display_name="Self-Cascade Upsampler Loader",
            category=TUNED,
            description="Load trained Self-Cascade feature upsamplers (.safetensors in models/self_cascade/).",
            inputs=[io.Combo.Input("upsampler_name", options=upsampler_files(folder_paths.get_filename_list(MODEL_FOLDER)),
                                   tooltip="A set trained by SelfCascadeTrainUpsamplers or converted from the "
                                           "official SDXL weights (scripts/convert_official_upsamplers.py).")],
            outputs=[Upsamplers.Output(display_name="upsamplers",
                                       tooltip="The upsampler set; connect to Apply Upsamplers or Stage.")],
        )

    @classmethod
    def execute(cls, upsampler_name) -> io.NodeOutput:
        uset = load_named(upsampler_name)
        i = uset.info
        logger.info("Self-Cascade: loaded %s (%s, %s variant, %d taps, %d params)", upsampler_name,
                    i.family, i.variant, len(i.taps), uset.num_params())
        return io.NodeOutput(uset)


class SelfCascadeApplyUpsamplers(io.ComfyNode):
    """Patch a MODEL so that each step adds the upsampled pivot features (Eq. 7-8)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SelfCascadeApplyUpsamplers",
            display_name="Self-Cascade Apply Upsamplers",
            category=TUNED,
            description="Add the previous stage's UNet features, upsampled by trained time-aware upsamplers, "
                        "into the high-resolution denoising. Use with a KSampler at the larger size.",
            inputs=[
                io.Model.Input("model", tooltip="An SD1.x/2.x/SDXL-style UNet model (DiT/Flux: use the tuning-free path)."),
                Upsamplers.Input("upsamplers", tooltip="From Self-Cascade Upsampler Loader."),
                io.Latent.Input("pivot", tooltip="The previous stage's latent, or the output of Self-Cascade Pivot "
                                                 "Upsample (its stored original is used)."),
                io.Float.Input("strength", default=1.0, min=0.0, max=4.0, step=0.01,
                               tooltip="Scale of the added features; 0 = the plain model."),
                io.Float.Input("end_timestep", default=100.0, min=0.0, max=1000.0, step=1.0,
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
        return io.NodeOutput(apply_upsamplers(model, upsamplers, samples, strength, end_timestep))


NODES = (SelfCascadeUpsamplerLoader, SelfCascadeApplyUpsamplers)
