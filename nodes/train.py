"""Train the time-aware feature upsamplers (Algorithm 1) with the frozen base model.

``train_upsamplers`` is the Python entry point (the node and the benchmark call it); the loss
runs through the real tuned patch (``nodes.patch.UpsamplerInjection``) on ComfyUI's sampling
path (see train_loop.py), so training and inference share one code path.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field

import torch
from comfy_api.latest import io

from ..upsampler.checkpoint import CKPT_SUFFIX, Checkpoint, check_save_name, load_checkpoint, save_checkpoint
from ..upsampler.fileformat import save_upsamplers
from ..upsampler.modules import UpsamplerSet
from ..upsampler.taps import derive_taps, emb_dim
from .common import CATEGORY, SelfCascadeError, Upsamplers
from .patch import UpsamplerInjection, check_unet, model_family
from .train_data import TrainingImages, from_image_input
from .train_loop import LoopState, TrainingGuider, UpsamplerTrainingSampler
from .train_setup import BatchSampler, TrainConfig, encode_images, generate_pivots, split_conditioning

logger = logging.getLogger(__name__)

#: Config fields a resumed run must share with its checkpoint (others, e.g. steps, may change).
RESUME_MUST_MATCH = ("width", "height", "scale", "variant", "variant_size", "K", "end_timestep",
                     "pivot_mode", "latent_cell")


@dataclass
class TrainResult:
    """What a run produced. ``stopped_reason``: "completed", "non-finite loss ..." (nothing saved
    beyond the last good checkpoint) or "already complete" (resumed a finished run)."""

    upsamplers: UpsamplerSet
    losses: list[float]
    steps_done: int
    seconds: float
    stopped_reason: str
    file_path: str | None = None
    checkpoint_path: str | None = None
    checkpoint_step: int | None = None
    notes: list[str] = field(default_factory=list)


def checkpoint_path_for(save_path: str) -> str:
    """``<name>.safetensors`` -> ``<name>.ckpt.safetensors`` next to it."""
    base = save_path[: -len(".safetensors")] if save_path.endswith(".safetensors") else save_path
    return base + CKPT_SUFFIX


def save_path_for(save_name: str, folder: str) -> str:
    """The final file for a user-given save name (no separators, no '..')."""
    try:
        stem = check_save_name(save_name)
    except ValueError as e:
        raise SelfCascadeError(str(e)) from None
    return os.path.join(folder, stem + ".safetensors")


def _precision(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    if cfg.mixed_precision == "fp32" or device.type != "cuda":
        return None
    if cfg.mixed_precision in ("auto", "bf16") and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16 if cfg.mixed_precision == "fp16" else None


def _gradient_checkpointing(stack: ExitStack, unet: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> bool:
    """Recompute every layer of every UNet block in backward (instance-level ``forward``, undone on
    exit). Layers, not blocks: ``forward_timestep_embed`` calls a block's layers directly."""
    on = cfg.gradient_checkpointing == "on" or (cfg.gradient_checkpointing == "auto" and device.type == "cuda")
    if not on:
        return False
    import torch.utils.checkpoint as tuc

    blocks = list(unet.input_blocks) + [unet.middle_block] + list(unet.output_blocks)
    for layer in (layer for block in blocks for layer in block):
        orig = layer.forward

        def fwd(*a, _orig=orig, **k):
            if not torch.is_grad_enabled():
                return _orig(*a, **k)
            return tuc.checkpoint(_orig, *a, use_reentrant=False, **k)

        layer.forward = fwd
        stack.callback(layer.__dict__.pop, "forward", None)
    return True


def _frozen(stack: ExitStack, module: torch.nn.Module) -> None:
    """requires_grad False on every base parameter for the run; flags restored (by name) on exit."""
    flags = {name: p.requires_grad for name, p in module.named_parameters()}
    for p in module.parameters():
        with torch.inference_mode(p.is_inference()):
            p.requires_grad_(False)

    def restore():
        for name, p in module.named_parameters():
            if name in flags and p.requires_grad != flags[name]:
                with torch.inference_mode(p.is_inference()):
                    p.requires_grad_(flags[name])

    stack.callback(restore)


def _restore(ckpt: Checkpoint, cfg: TrainConfig, uset: UpsamplerSet, optimizer, gen: torch.Generator, path: str) -> None:
    old = ckpt.config.get("train", {})
    diff = [f"{k}: {old.get(k)!r} -> {getattr(cfg, k)!r}" for k in RESUME_MUST_MATCH
            if k in old and old[k] != getattr(cfg, k)]
    if diff:
        raise SelfCascadeError(f"cannot resume from {os.path.basename(path)}: settings changed ({'; '.join(diff)}). "
                               "Use the checkpoint's settings or a new save_name.")
    try:
        uset.load_state_dict(ckpt.weights)
    except RuntimeError as e:
        raise SelfCascadeError(f"checkpoint {os.path.basename(path)} does not fit this model/variant: {e}") from None
    optimizer.load_state_dict(ckpt.optimizer)
    for group in optimizer.param_groups:  # the current run's learning rate wins
        group["lr"], group["weight_decay"] = cfg.learning_rate, cfg.weight_decay
    gen.set_state(ckpt.rng["generator"])


def train_upsamplers(model, images, encode: Callable, positive, *, config: TrainConfig, save_path: str | None = None,
                     resume: bool = False, interrupt_check: Callable[[], None] | None = None,
                     progress: Callable[[int, int, float], None] | None = None, empty=None) -> TrainResult:
    """Train a fresh (or resumed) upsampler set for ``model`` on ``images``; see docs/TRAINING.md.

    ``images``: IMAGE (N, H, W, 3) 0..1, a list of them, or a TrainingImages (folder input).
    ``encode``: IMAGE batch -> latent (B, C, h, w) in LATENT space (e.g. ``vae.encode``).
    ``positive``: one CONDITIONING for all images or a list with one per image; ``empty``: the
    empty-prompt CONDITIONING used for caption dropout (required when ``caption_dropout > 0``).
    ``save_path``: final ``.safetensors``; checkpoints go to ``<name>.ckpt.safetensors`` beside it.
    Cancel (``interrupt_check`` or ComfyUI's interrupt) saves a resumable checkpoint, then re-raises.
    """
    import comfy.model_management

    cfg = config
    cfg.validate()
    crop, _ = cfg.latent_sizes()
    data = images if isinstance(images, TrainingImages) else from_image_input(images)
    unet = check_unet(model)
    channels = int(unet.in_channels)
    if cfg.caption_dropout > 0 and empty is None:
        raise SelfCascadeError("caption_dropout > 0 needs the empty-prompt conditioning ('empty').")
    cond_list, cond_of_image = split_conditioning(positive, len(data))
    ckpt_path = checkpoint_path_for(save_path) if save_path else None
    if save_path and not resume and (os.path.exists(save_path) or os.path.exists(ckpt_path)):
        raise SelfCascadeError(f"{os.path.basename(save_path)} (or its checkpoint) already exists; choose another "
                               "save_name, or set resume to continue that run. Nothing was overwritten.")
    started = time.perf_counter()
    interrupt_check = interrupt_check or comfy.model_management.throw_exception_if_processing_interrupted
    with torch.inference_mode(False), torch.enable_grad(), ExitStack() as stack:
        items = encode_images(data, encode, cfg, channels, cond_of_image)
        if cfg.pivot_mode == "generated":
            generate_pivots(model, items, cond_list, empty, cfg, channels)
        flat, slices = [], []
        for cond in cond_list + ([empty] if empty is not None else []):
            slices.append(list(range(len(flat), len(flat) + len(cond))))
            flat.extend(cond)
        empty_index = len(cond_list) if empty is not None else None

        device = model.load_device
        with torch.random.fork_rng(devices=[]):  # seeded init, global RNG untouched
            torch.manual_seed(cfg.seed)
            uset = UpsamplerSet.create(derive_taps(unet), emb_dim(unet), model_family(model), cfg.variant,
                                       cfg.variant_size, K=float(cfg.K), end_timestep=float(cfg.end_timestep),
                                       scale=float(cfg.scale))
        uset.to(device=device, dtype=torch.float32).train()
        params = list(uset.parameters())
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        gen = torch.Generator().manual_seed(cfg.seed)
        state = LoopState(step=0)
        if resume and ckpt_path and os.path.exists(ckpt_path):
            ckpt = load_checkpoint(ckpt_path)
            _restore(ckpt, cfg, uset, optimizer, gen, ckpt_path)
            state.step, state.losses = ckpt.step, list(ckpt.losses)
            logger.info("Self-Cascade training: resumed %s at step %d.", os.path.basename(ckpt_path), ckpt.step)
        elif resume and save_path and os.path.exists(save_path):
            raise SelfCascadeError(f"resume: {os.path.basename(save_path)} exists but its checkpoint {os.path.basename(ckpt_path)} "
                                   "is gone, so it cannot be continued; choose another save_name. Nothing was overwritten.")
        elif resume:
            logger.info("Self-Cascade training: resume requested but no checkpoint %s; starting at step 0.", ckpt_path)
        saved = {"step": state.step if resume else None, "rng": gen.get_state()}

        def save_ckpt(st: LoopState) -> None:
            if not ckpt_path or not all(bool(torch.isfinite(p).all()) for p in params):
                return
            save_checkpoint(ckpt_path, Checkpoint(
                step=st.step, weights={k: v for k, v in uset.state_dict().items()}, optimizer=optimizer.state_dict(),
                rng={"generator": saved["rng"]}, losses=st.losses,
                config={"train": dataclasses.asdict(cfg), "info": uset.info.to_json()}))
            saved["step"] = st.step

        def on_step(st: LoopState) -> None:
            saved["rng"] = gen.get_state()
            if progress is not None:
                progress(st.step, cfg.steps, st.losses[-1])
            if st.step % max(1, cfg.log_every) == 0 or st.step == cfg.steps:
                logger.info("Self-Cascade training: step %d/%d loss %.5f", st.step, cfg.steps, st.losses[-1])
            if cfg.checkpoint_every and st.step % cfg.checkpoint_every == 0:
                save_ckpt(st)

        def on_exception(st: LoopState, exc: BaseException) -> None:
            if ckpt_path and st.step != saved["step"]:
                save_ckpt(st)
                logger.warning("Self-Cascade training stopped at step %d (%s); resumable checkpoint: %s",
                               st.step, type(exc).__name__, ckpt_path)

        _frozen(stack, model.model)
        injection = UpsamplerInjection(uset, torch.zeros(1, channels, *crop), 1.0, cfg.end_timestep,
                                       dtype=torch.float32)
        patched = injection.install(model)
        ms = patched.get_model_object("model_sampling")
        _gradient_checkpointing(stack, unet, cfg, device)
        lo = int(cfg.end_timestep) + 1

        def sample_sigma(n: int) -> torch.Tensor:
            t = torch.randint(lo, int(cfg.K) + 1, (n,), generator=gen).float()
            return ms.sigma(t).float().cpu()

        def set_pivot(p: torch.Tensor) -> None:
            injection.pivot = p

        sampler = UpsamplerTrainingSampler(
            total_steps=cfg.steps, state=state,
            next_batch=BatchSampler(items, cfg, empty_index, model.model.process_latent_in, gen),
            sample_sigma=sample_sigma, noise_like=lambda x: torch.randn(x.shape, generator=gen),
            set_pivot=set_pivot, optimizer=optimizer, params=params, autocast_dtype=_precision(cfg, device),
            on_step=on_step, check_interrupt=interrupt_check, on_exception=on_exception, cond_slices=slices)
        if state.step < cfg.steps:
            guider = TrainingGuider.create(patched, flat)
            dummy = torch.zeros(1, channels, *crop)
            guider.sample(dummy, dummy, sampler, torch.tensor([1.0, 0.0]), disable_pbar=True, seed=cfg.seed)
        else:
            state.stopped_reason = "already complete"
    uset.eval().requires_grad_(False)
    uset.info.steps = state.step
    uset.info.extra.update(pivot_mode=cfg.pivot_mode, train_size=[cfg.width, cfg.height],
                           learning_rate=cfg.learning_rate, batch_size=cfg.batch_size)
    result = TrainResult(upsamplers=uset, losses=state.losses, steps_done=state.step,
                         seconds=time.perf_counter() - started, stopped_reason=state.stopped_reason,
                         checkpoint_path=ckpt_path, checkpoint_step=saved["step"])
    if state.stopped_reason in ("completed", "already complete") and save_path:
        if saved["step"] != state.step:
            save_ckpt(state)
            result.checkpoint_step = state.step
        save_upsamplers(save_path, uset)
        result.file_path = save_path
    return result


# --- the node -------------------------------------------------------------------------------------

def _encode_text(clip, text: str):
    return clip.encode_from_tokens_scheduled(clip.tokenize(text))


class SelfCascadeTrainUpsamplers(io.ComfyNode):
    """Train Self-Cascade upsamplers for the connected MODEL (Algorithm 1). Experimental."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        from ..upsampler.modules import VARIANTS
        from .train_setup import PIVOT_MODES

        return io.Schema(
            node_id="SelfCascadeTrainUpsamplers",
            display_name="Self-Cascade Train Upsamplers",
            category=f"{CATEGORY}/training",
            is_experimental=True,
            description="Train the time-aware feature upsamplers of the tuned Self-Cascade with the frozen model "
                        "(paper Algorithm 1). Saves to models/self_cascade/<save_name>.safetensors, checkpoints "
                        "beside it; cancel keeps a resumable checkpoint.",
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
                               "trained with the empty prompt (official code: about 10%). Needs clip; 0 = off."),
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
                io.Float.Input("K", default=700.0, min=1.0, max=999.0, step=1.0, tooltip="Largest training timestep; "
                               "t is drawn from (end_timestep, K]. Use the K you sample with."),
                io.Float.Input("end_timestep", default=100.0, min=0.0, max=998.0, step=1.0, tooltip="Upsamplers are "
                               "used only for t above this (inference gate); training draws t above it too."),
                io.Combo.Input("pivot_mode", options=list(PIVOT_MODES), default="downsample", tooltip="downsample: "
                               "pivot = VAE(Downsample(crop)) (paper). generated: a base-model sample from the caption "
                               "(official code; needs clip)."),
                io.Combo.Input("variant", options=list(VARIANTS), default="official", tooltip="Upsampler architecture: "
                               "official (about 145M parameters on SDXL) or light (bottleneck)."),
                io.Int.Input("variant_size", default=0, min=0, max=4096, tooltip="Variant size (light: bottleneck "
                             "width); 0 = the variant's default."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, tooltip="Seed of crops, timesteps, noise "
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
    def fingerprint_inputs(cls, folder: str = "", save_name: str = "", **kwargs):
        """Re-run when the folder's files or the saved files change (ComfyUI caches otherwise)."""
        import folder_paths

        from .common import model_folder_path
        from .train_data import resolve_input_folder

        try:
            stamp = []
            if folder and folder.strip():
                path = resolve_input_folder(folder, folder_paths.get_input_directory())
                for name in sorted(os.listdir(path)):
                    st = os.stat(os.path.join(path, name))
                    stamp.append((name, st.st_mtime_ns, st.st_size))
            final = save_path_for(save_name, model_folder_path())
            for f in (final, checkpoint_path_for(final)):
                stamp.append((os.path.basename(f), os.stat(f).st_mtime_ns if os.path.exists(f) else None))
            return repr(stamp)
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
        from .train_data import TrainingImages, load_folder

        save_path = save_path_for(save_name, model_folder_path())
        data = TrainingImages()
        if images is not None:
            data.extend(from_image_input(images))
        if folder and folder.strip():
            data.extend(load_folder(folder, folder_paths.get_input_directory()))
        if len(data) == 0:
            raise SelfCascadeError("no training images: connect 'images' or name a 'folder' under ComfyUI's input/.")
        if (caption_dropout > 0 or pivot_mode == "generated") and clip is None:
            raise SelfCascadeError("caption_dropout > 0 and pivot_mode 'generated' need 'clip' (for the empty "
                                   "prompt); connect clip or set caption_dropout to 0.")
        if conditioning is not None:
            positive = conditioning
        elif clip is not None:
            texts = [c if c else prompt for c in data.captions]
            cache: dict[str, list] = {}
            positive = [cache.setdefault(t, _encode_text(clip, t)) if t not in cache else cache[t] for t in texts]
        else:
            raise SelfCascadeError("connect 'clip' (with a prompt or captions) or a 'conditioning'.")
        empty = _encode_text(clip, "") if clip is not None else None
        cfg = TrainConfig(width=width, height=height, scale=scale, steps=steps, learning_rate=learning_rate,
                          batch_size=batch_size, K=K, end_timestep=end_timestep, pivot_mode=pivot_mode,
                          variant=variant, variant_size=variant_size, seed=seed, checkpoint_every=checkpoint_every,
                          caption_dropout=caption_dropout if clip is not None else 0.0)
        bar = comfy.utils.ProgressBar(steps)
        result = train_upsamplers(model, data, vae.encode, positive, config=cfg, save_path=save_path, resume=resume,
                                  progress=lambda step, total, loss: bar.update_absolute(step, total), empty=empty)
        if result.file_path is None:
            where = (f"the last good checkpoint (step {result.checkpoint_step}) is kept at {result.checkpoint_path}"
                     if result.checkpoint_step else "no checkpoint had been written yet")
            raise SelfCascadeError(f"training stopped: {result.stopped_reason}; {where}. Nothing was overwritten. "
                                   "Resume with a lower learning_rate, or check the images/VAE.")
        logger.info("Self-Cascade training: saved %s (%d steps, %.1f s).", result.file_path, result.steps_done,
                    result.seconds)
        return io.NodeOutput(result.upsamplers, draw_loss_curve(result.losses))


NODES = (SelfCascadeTrainUpsamplers,)
