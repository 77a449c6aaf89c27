"""The training node: SelfCascadeTrainUpsamplers (paper Algorithm 1, experimental).

A thin layer over the training core in ``nodes/training/`` (docs/TRAINING.md): it gathers the
images (IMAGE input and/or a folder under ComfyUI's input/), encodes captions with the CLIP,
runs ``training.train_upsamplers`` with ComfyUI's progress bar, and returns the set and its loss curve.
"""
from __future__ import annotations

import logging
import os

from comfy_api.latest import io

from .checks import check_link
from .common import CATEGORY, DEFAULT_END_TIMESTEP, DEFAULT_K, K_MAX, K_MIN, SEED_MAX, SelfCascadeError, Upsamplers
from .managed import upsampler_patcher
from .training import TrainConfig, preflight, save_path_for, train_upsamplers
from .training.data import from_image_input

logger = logging.getLogger(__name__)


def _encode_text(clip, text: str):
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


class SelfCascadeTrainUpsamplers(io.ComfyNode):
    """Train Self-Cascade upsamplers for the connected MODEL (Algorithm 1). Experimental."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        from ..upsampler.modules import VARIANTS
        from .training import PIVOT_MODES

        return io.Schema(
            node_id="SelfCascadeTrainUpsamplers",
            display_name="Self-Cascade Train Upsamplers",
            category=f"{CATEGORY}/training",
            is_experimental=True,
            description="Teaches a small upsampler set from your own high-resolution images, for the tuned "
                        "cascade on a model that has no published set (SD1.5/2.1); your model itself is not "
                        "changed. Saves to models/self_cascade/<save_name>.safetensors, checkpoints beside it; "
                        "cancel keeps a resumable checkpoint (the paper's Algorithm 1).",
            inputs=[
                io.Model.Input("model", tooltip="The base model (frozen; its weights are never changed)."),
                io.Vae.Input("vae", tooltip="The VAE of this model: encodes the training crops and their pivots."),
                io.Image.Input("images", optional=True, tooltip="Training images (an IMAGE batch). Each must be at "
                               "least width x height; random crops of that size are used."),
                io.String.Input("folder", default="", optional=True, tooltip="Subfolder of ComfyUI's input directory "
                                "with training images (and optional same-name .txt captions). Empty = none."),
                io.Clip.Input("clip", optional=True, tooltip="Text encoder for captions / the prompt (and the empty "
                              "prompt used by caption dropout)."),
                io.String.Input("prompt", default="", multiline=True, optional=True, tooltip="Fixed prompt for "
                                "images without a .txt caption (needs clip)."),
                io.Conditioning.Input("conditioning", optional=True, tooltip="Use this conditioning for every image "
                                      "instead of clip + prompt/captions."),
                io.Float.Input("caption_dropout", default=0.1, min=0.0, max=1.0, step=0.01, tooltip="Share of samples "
                               "trained with the empty prompt (official code: about 10%). Needs clip (off without "
                               "it); 0 = off."),
                io.Int.Input("width", default=1024, min=16, max=8192, step=8, tooltip="Training crop width in pixels "
                             "(the high-resolution size, e.g. 2x the model's native size)."),
                io.Int.Input("height", default=1024, min=16, max=8192, step=8, tooltip="Training crop height in pixels."),
                io.Float.Input("scale", default=2.0, min=1.01, max=4.0, step=0.01, tooltip="Stage factor per side: the "
                               "pivot is the crop downsampled by this (2.0 = the paper's stage)."),
                io.Int.Input("steps", default=1000, min=1, max=1_000_000, tooltip="Optimiser steps in total (a resumed "
                             "run continues up to this). The paper adapts in about 10k."),
                io.Float.Input("learning_rate", default=5e-5, min=1e-7, max=1.0, step=1e-6, tooltip="AdamW learning "
                               "rate (paper: 5e-5; weight decay 0.01)."),
                io.Int.Input("batch_size", default=1, min=1, max=64, tooltip="Crops per step."),
                io.Float.Input("K", default=DEFAULT_K, min=K_MIN, max=K_MAX, step=1.0, tooltip="Largest training timestep; "
                               "t is drawn from (end_timestep, K]. Use the K you sample with."),
                io.Float.Input("end_timestep", default=DEFAULT_END_TIMESTEP, min=0.0, max=K_MAX - 1, step=1.0,
                               tooltip="Upsamplers are used only for t above this (inference gate); training draws "
                               "t above it too, so it stays below K (at most 998)."),
                io.Combo.Input("pivot_mode", options=list(PIVOT_MODES), default="downsample", tooltip="downsample: "
                               "pivot = VAE(Downsample(crop)) (paper). generated: a base-model sample from the caption "
                               "(official code; needs clip)."),
                io.Combo.Input("variant", options=list(VARIANTS), default="official", tooltip="Upsampler architecture: "
                               "official (about 145M parameters on SDXL) or light (bottleneck)."),
                io.Int.Input("variant_size", default=0, min=0, max=4096, tooltip="Variant size (light: bottleneck "
                             "width); 0 = the variant's default."),
                io.Int.Input("seed", default=0, min=0, max=SEED_MAX, tooltip="Seed of crops, timesteps, noise "
                             "and dropout (a resumed run continues the same stream)."),
                io.String.Input("save_name", default="self_cascade_upsamplers", tooltip="File name (no folders) under "
                                "models/self_cascade/. An existing name is never overwritten unless resume is on."),
                io.Int.Input("checkpoint_every", default=100, min=0, max=1_000_000, tooltip="Save a resumable "
                             "checkpoint every this many steps (0 = only at the end and on cancel)."),
                io.Boolean.Input("resume", default=False, tooltip="Continue from the checkpoint of save_name (weights, "
                                 "optimizer, step count, RNG)."),
            ],
            outputs=[
                Upsamplers.Output(display_name="upsamplers", tooltip="The trained set (also saved to disk)."),
                io.Image.Output(display_name="loss_curve", tooltip="Training loss per step and its moving mean."),
            ],
        )

    @classmethod
    def fingerprint_inputs(cls, folder: str = "", **kwargs):
        """Re-run when the folder's files change (ComfyUI compares the other inputs itself). The node's own
        output file is not part of it: a finished prompt queued again is served from the cache."""
        try:
            return repr(_folder_stamp(folder))
        except (OSError, ValueError):
            return float("nan")  # never equal: run, and let execute() report the problem

    @classmethod
    def execute(cls, model, vae, width, height, scale, steps, learning_rate, batch_size, K, end_timestep, pivot_mode,
                variant, variant_size, seed, save_name, checkpoint_every, resume, images=None, folder="", clip=None,
                prompt="", conditioning=None, caption_dropout=0.1) -> io.NodeOutput:
        import comfy.utils
        import folder_paths

        from ..upsampler.losscurve import draw_loss_curve
        from .common import model_folder_path
        from .training.data import TrainingImages, load_folder
        from .training.identity import finished_run, run_id

        check_link(vae, "vae", "encode", "VAE", "the checkpoint loader's VAE output")
        if clip is not None:
            check_link(clip, "clip", "tokenize", "CLIP", "the checkpoint loader's CLIP output")
        if conditioning is not None and not isinstance(conditioning, (list, tuple)):
            raise SelfCascadeError(f"'conditioning' is a {type(conditioning).__name__}, not a CONDITIONING; connect a "
                                   "text encoder's output (e.g. CLIP Text Encode), or one per image.")
        save_path = save_path_for(save_name, model_folder_path())
        data = TrainingImages()
        if images is not None:
            data.extend(from_image_input(images))
        if folder and folder.strip():
            data.extend(load_folder(folder, folder_paths.get_input_directory()))
        if pivot_mode == "generated" and clip is None:
            raise SelfCascadeError("pivot_mode 'generated' needs 'clip' (it samples pivots from the captions); "
                                   "connect clip or use pivot_mode 'downsample'.")
        if caption_dropout > 0 and clip is None:
            logger.info("Self-Cascade training: caption_dropout %g is off: it needs 'clip' (for the empty prompt), "
                        "and only 'conditioning' is connected.", caption_dropout)
        if conditioning is not None:
            positive = conditioning
        elif clip is not None:
            texts = [c if c else prompt for c in data.captions]
            cache: dict[str, list] = {}
            positive = [cache.setdefault(t, _encode_text(clip, t)) if t not in cache else cache[t] for t in texts]
        else:
            raise SelfCascadeError("connect 'clip' (with a prompt or captions) or a 'conditioning'.")
        cfg = TrainConfig(width=width, height=height, scale=scale, steps=steps, learning_rate=learning_rate,
                          batch_size=batch_size, K=K, end_timestep=end_timestep, pivot_mode=pivot_mode,
                          variant=variant, variant_size=variant_size, seed=seed, checkpoint_every=checkpoint_every,
                          caption_dropout=caption_dropout if clip is not None else 0.0)
        preflight(cfg, n_images=len(data), has_empty=clip is not None)
        rid = run_id(cfg, model, vae, [images, _folder_stamp(folder)], [prompt, *map(str, data.captions)], positive)
        done = None if resume else finished_run(save_path, rid)
        if done is not None:
            return io.NodeOutput(upsampler_patcher(done[0]), draw_loss_curve(done[1]))
        empty = _encode_text(clip, "") if clip is not None else None
        bar = comfy.utils.ProgressBar(steps)
        result = train_upsamplers(model, data, vae.encode, positive, config=cfg, save_path=save_path, resume=resume,
                                  progress=lambda step, total, loss: bar.update_absolute(step, total), empty=empty,
                                  run_id=rid)
        if result.file_path is None:
            where = (f"the last good checkpoint (step {result.checkpoint_step}) is kept at {result.checkpoint_path}"
                     if result.checkpoint_step else "no checkpoint had been written yet")
            raise SelfCascadeError(f"training stopped: {result.stopped_reason}; {where}. Nothing was overwritten. "
                                   "Resume with a lower learning_rate, or check the images/VAE.")
        logger.info("Self-Cascade training: saved %s (%d steps, %.1f s).", result.file_path, result.steps_done,
                    result.seconds)
        return io.NodeOutput(upsampler_patcher(result.upsamplers), draw_loss_curve(result.losses))


def _folder_stamp(folder: str) -> list:
    """(name, mtime, size) of every file of the training folder under ComfyUI's input/ (empty: no folder)."""
    import folder_paths

    from .training.data import resolve_input_folder

    if not (folder and folder.strip()):
        return []
    path = resolve_input_folder(folder, folder_paths.get_input_directory())
    return [(name, (st := os.stat(os.path.join(path, name))).st_mtime_ns, st.st_size) for name in sorted(os.listdir(path))]


NODES = (SelfCascadeTrainUpsamplers,)
