#!/usr/bin/env python3
"""Train a Self-Cascade upsampler set from a folder of images, on one GPU, many GPUs or the CPU.

The same training core as the ComfyUI node (``self_cascade.nodes.training``) and the same
``.safetensors`` set format (load it with "Self-Cascade Upsampler Loader"). ComfyUI is used as a
library to load the frozen base model, its text encoder and its VAE.

    # one GPU
    python scripts/train_upsamplers.py --checkpoint sd15.safetensors --train_data_dir imgs \\
        --output_dir out --output_name sd15_x2 --resolution 1024 --max_train_steps 10000
    # 8 GPUs of one machine (the same command under torchrun; --global_batch_size is split between them)
    torchrun --standalone --nproc_per_node 8 scripts/train_upsamplers.py ... --global_batch_size 32
    # resume after preemption (any number of processes): the same command plus --resume

Several processes (torchrun): DistributedDataParallel over the upsampler set only (the base model
is frozen on every process), NCCL on GPUs, gloo on the CPU. Every process draws the same global
batch from the seed and trains its own rows, so the weights do not depend on the process count.
Only rank 0 writes files. SIGTERM/SIGINT (preemption, Ctrl-C) stop every process after the
current step and write a checkpoint. See README "Training a set for everyone" and docs/TRAINING.md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import signal
import sys
import time

import torch
from comfy_startup import start

logger = logging.getLogger("train_upsamplers")

MODEL_SUFFIXES = (".safetensors", ".sft")


class Stopped(Exception):
    """A stop signal (SIGTERM/SIGINT) reached every process; the checkpoint of the last step is written."""


def build_parser() -> argparse.ArgumentParser:
    start(comfyui=False)  # the pure-torch part of the pack only: --help works without ComfyUI
    from self_cascade.upsampler.modules import DEFAULT_END_TIMESTEP
    from self_cascade.upsampler.renoise import DEFAULT_K

    p = argparse.ArgumentParser(
        prog="train_upsamplers.py", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train the time-aware feature upsamplers of Self-Cascade (ECCV 2024, Algorithm 1) for a frozen "
                    "SD1.x / SD2.x / SDXL model from a folder of images. Output: OUTPUT_DIR/OUTPUT_NAME.safetensors "
                    "(put it in ComfyUI/models/self_cascade/), a resumable OUTPUT_NAME.ckpt.safetensors, a loss log "
                    "(.loss.csv, .loss.json) and a loss plot (.loss.png). Run under torchrun for several GPUs.")
    g = p.add_argument_group("base model (ComfyUI loads it; .safetensors only)")
    g.add_argument("--checkpoint", "--pretrained_model_name_or_path", dest="checkpoint", metavar="FILE",
                   help="A full checkpoint (UNet + text encoder + VAE), like ComfyUI's Load Checkpoint.")
    g.add_argument("--unet", metavar="FILE", help="Separate diffusion-model file (instead of --checkpoint).")
    g.add_argument("--clip", metavar="FILE", nargs="+", help="Separate text-encoder file(s); SDXL takes two (CLIP-L, CLIP-G).")
    g.add_argument("--clip_type", default="stable_diffusion", help="ComfyUI CLIP type for --clip files.")
    g.add_argument("--vae", metavar="FILE", help="Separate VAE file (also overrides the checkpoint's VAE).")
    g.add_argument("--comfyui", metavar="DIR", help="ComfyUI folder (default: $COMFYUI_PATH, or the ComfyUI whose "
                   "custom_nodes holds this pack).")
    g = p.add_argument_group("data")
    g.add_argument("--train_data_dir", required=True, metavar="DIR", help="Folder of training images (.png .jpg .webp "
                   "...), each at least --resolution; a same-name caption file (e.g. img.txt) is its prompt.")
    g.add_argument("--caption_extension", default=".txt", help="Extension of caption files.")
    g.add_argument("--prompt", default="", help="Prompt for images without a caption file.")
    g.add_argument("--caption_dropout_rate", type=float, default=0.1, help="Share of samples trained with the empty "
                   "prompt (official code: about 10%%).")
    g.add_argument("--latent_cache", metavar="DIR", help="Where encoded latents are cached (default: "
                   "OUTPUT_DIR/latent_cache). A large set is encoded once; later runs and resumes read it.")
    g.add_argument("--no_latent_cache", action="store_true", help="Encode in memory only, write no cache.")
    g.add_argument("--cache_latents_only", action="store_true", help="Encode the folder into the cache and exit.")
    g.add_argument("--skip_unreadable_images", action="store_true", help="Skip images that cannot be read, with a "
                   "warning (default: stop before training and list them all).")
    g = p.add_argument_group("training (paper defaults)")
    g.add_argument("--resolution", default="1024", metavar="W[,H]", help="Training crop in pixels (the high-res "
                   "size, e.g. 2x the model's native size); a multiple of 8 reachable from the pivot at --scale.")
    g.add_argument("--scale", type=float, default=2.0, help="Stage factor per side: the pivot is the crop / scale.")
    g.add_argument("--max_train_steps", type=int, default=10000, help="Optimiser steps in total (a resumed run "
                   "continues up to this). The paper adapts in about 10k.")
    g.add_argument("--global_batch_size", "--batch_size", dest="batch_size", type=int, default=8, metavar="N", help="Samples "
                   "per optimiser step over ALL processes together (not per GPU): with 8 GPUs and 32, each GPU takes "
                   "4. Keep it when changing the GPU count and the run stays the same.")
    g.add_argument("--learning_rate", type=float, default=5e-5, help="AdamW learning rate.")
    g.add_argument("--weight_decay", type=float, default=0.01, help="AdamW weight decay.")
    g.add_argument("--seed", type=int, default=0, help="Seed of initialisation, data order, crops, timesteps, noise.")
    g.add_argument("--K", type=float, default=DEFAULT_K, help="Largest training timestep (of 1000); use the K you "
                   "sample with. Stored in the file.")
    g.add_argument("--end_timestep", type=float, default=DEFAULT_END_TIMESTEP, help="Upsamplers act only above this timestep.")
    g.add_argument("--pivot_mode", choices=("downsample", "generated"), default="downsample", help="downsample: "
                   "pivot = VAE(Downsample(crop)) (paper); generated: a base-model sample from the caption, made "
                   "by every process for every image (slow, not cached).")
    g.add_argument("--variant", choices=("official", "light"), default="official", help="Upsampler architecture.")
    g.add_argument("--variant_size", type=int, default=0, help="Variant size (light: bottleneck width); 0 = default.")
    g.add_argument("--mixed_precision", choices=("auto", "bf16", "fp16", "no"), default="auto", help="Autocast of "
                   "the forward on CUDA (auto: bf16 when supported). Weights and AdamW state stay fp32. "
                   "CPU: always fp32.")
    g.add_argument("--gradient_checkpointing", choices=("auto", "on", "off"), default="auto", help="Recompute the "
                   "UNet's layers in backward (less memory, ~30%% slower); auto: on for CUDA.")
    g = p.add_argument_group("output and resuming")
    g.add_argument("--output_dir", required=True, metavar="DIR", help="Folder for the set, checkpoint and logs.")
    g.add_argument("--output_name", default="self_cascade_upsamplers", help="File stem of the set.")
    g.add_argument("--save_every_n_steps", type=int, default=500, help="Write the resumable checkpoint every N "
                   "steps (0: only at the end and when stopped).")
    g.add_argument("--resume", action="store_true", help="Continue OUTPUT_NAME.ckpt.safetensors (weights, AdamW, "
                   "step, data/noise RNG), with any number of processes. Without it an existing output is never "
                   "overwritten.")
    g.add_argument("--log_every", type=int, default=10, help="Log the loss every N steps.")
    g.add_argument("--cpu", action="store_true", help="Train on the CPU (gloo) even when CUDA is available.")
    g.add_argument("--dist_timeout_minutes", type=float, default=30.0, help="How long a process waits for the "
                   "others in a collective before the job fails.")
    return p


def _resolution(text: str) -> tuple[int, int]:
    parts = [int(v) for v in text.replace("x", ",").split(",") if v.strip()]
    if len(parts) not in (1, 2):
        raise ValueError(f"--resolution {text!r}: give W or W,H")
    return (parts[0], parts[-1])


def _model_file(path: str | None, flag: str) -> str | None:
    if path is None:
        return None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{flag} {path}: no such file.")
    if not path.lower().endswith(MODEL_SUFFIXES):
        raise ValueError(f"{flag} {path}: only .safetensors files are loaded (no pickle); convert it first.")
    return path


def load_models(args, need_vae: bool = True):
    """(model patcher, clip, vae) through ComfyUI's own loaders; vae None when not ``need_vae``."""
    import comfy.sd
    import comfy.utils
    from self_cascade.nodes.common import SelfCascadeError

    vae = None
    if args.checkpoint:
        model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(args.checkpoint, output_vae=need_vae and args.vae is None,
                                                                    output_clip=not args.clip)[:4]
    else:
        model = comfy.sd.load_diffusion_model(args.unet)
        clip = None
    if args.clip:
        clip_type = getattr(comfy.sd.CLIPType, args.clip_type.upper(), None)
        if clip_type is None:
            raise SelfCascadeError(f"--clip_type {args.clip_type!r} is not a ComfyUI CLIP type.")
        clip = comfy.sd.load_clip(ckpt_paths=list(args.clip), embedding_directory=None, clip_type=clip_type)
    if args.vae and need_vae:
        vae = comfy.sd.VAE(sd=comfy.utils.load_torch_file(args.vae, safe_load=True))
    if model is None or clip is None or (need_vae and vae is None):
        missing = [n for n, v in (("diffusion model", model), ("text encoder", clip), ("VAE", vae if need_vae else 1))
                   if v is None]
        raise SelfCascadeError(f"no {', '.join(missing)} loaded: give --checkpoint with all parts, or --unet, --clip, --vae.")
    return model, clip, vae


def _file_id(path: str) -> str:
    st = os.stat(path)
    return f"{os.path.basename(path)}|{st.st_size}|{st.st_mtime_ns}"


def _checkpoint_step(path: str) -> int | None:
    """The step stored in a checkpoint file (metadata only), or None."""
    try:
        from safetensors import safe_open
        from self_cascade.upsampler.checkpoint import META_KEY

        with safe_open(path, framework="pt") as fh:
            return int(json.loads(fh.metadata()[META_KEY])["step"])
    except Exception:  # missing or unreadable: reported as "none"
        return None


def _write_text(path: str, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)


class LossLog:
    """``<name>.loss.csv`` (step,loss), appended live on rank 0; rewritten whole at the end with
    ``.loss.json`` and the ``.loss.png`` plot (the node's loss-curve drawing)."""

    def __init__(self, stem: str):
        self.csv, self.json, self.png = stem + ".loss.csv", stem + ".loss.json", stem + ".loss.png"
        self.fh = None

    def add(self, step: int, loss: float) -> None:
        if self.fh is None:  # first step of this run: keep earlier rows (a resumed run) below it
            rows = []
            if os.path.exists(self.csv):
                with open(self.csv) as fh:
                    rows = [r for r in fh.read().splitlines()[1:] if r and int(r.split(",")[0]) < step]
            from self_cascade.upsampler.checkpoint import atomic_write

            head = "\n".join(["step,loss", *rows]) + "\n"  # rewritten atomically: a full disk keeps the old log
            atomic_write(self.csv, lambda tmp: _write_text(tmp, head))
            self.fh = open(self.csv, "a")
        self.fh.write(f"{step},{loss!r}\n")
        self.fh.flush()

    def close(self) -> None:
        if self.fh is not None:
            self.fh.close()
            self.fh = None

    def write_final(self, losses: list[float], info: dict) -> None:
        from PIL import Image
        from self_cascade.upsampler.checkpoint import atomic_write
        from self_cascade.upsampler.losscurve import draw_loss_curve

        self.close()
        text = "step,loss\n" + "".join(f"{i + 1},{v!r}\n" for i, v in enumerate(losses))
        atomic_write(self.csv, lambda tmp: _write_text(tmp, text))
        body = json.dumps({**info, "losses": losses}, indent=1)
        atomic_write(self.json, lambda tmp: _write_text(tmp, body))
        img = (draw_loss_curve(losses)[0].numpy() * 255).round().astype("uint8")
        atomic_write(self.png, lambda tmp: Image.fromarray(img).save(tmp, format="PNG"))


def _signals(flag: dict) -> dict:
    """SIGTERM/SIGINT set ``flag["signal"]`` (checked between steps); returns the previous handlers."""
    def handler(signum, frame):
        flag["signal"] = signal.Signals(signum).name
        print(f"[rank {flag['rank']}] {flag['signal']} received: stopping at the next step boundary (the checkpoint "
              "of the last completed step is kept). If another process died, torchrun names it.", file=sys.stderr,
              flush=True)

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in previous:
        signal.signal(sig, handler)
    return previous


def _config(args):
    """The run's TrainConfig from the command line, checked by the training preflight."""
    from self_cascade.nodes.training import TrainConfig

    width, height = _resolution(args.resolution)
    return TrainConfig(width=width, height=height, scale=args.scale, steps=args.max_train_steps,
                       learning_rate=args.learning_rate, weight_decay=args.weight_decay, batch_size=args.batch_size,
                       K=args.K, end_timestep=args.end_timestep, pivot_mode=args.pivot_mode, variant=args.variant,
                       variant_size=args.variant_size, seed=args.seed, checkpoint_every=args.save_every_n_steps,
                       caption_dropout=args.caption_dropout_rate, gradient_checkpointing=args.gradient_checkpointing,
                       mixed_precision="fp32" if args.mixed_precision == "no" else args.mixed_precision,
                       log_every=args.log_every)


def _check_files(args, parallel) -> str:
    """The model files exist and are safetensors; the output is new unless resuming. Returns the set's path."""
    from self_cascade.nodes.common import SelfCascadeError
    from self_cascade.nodes.training import checkpoint_path_for, save_path_for

    if bool(args.checkpoint) == bool(args.unet):
        raise SelfCascadeError("give either --checkpoint or --unet (with --clip and --vae).")
    for path, flag in ((args.checkpoint, "--checkpoint"), (args.unet, "--unet"), (args.vae, "--vae"),
                       *((c, "--clip") for c in args.clip or [])):
        try:
            _model_file(path, flag)
        except (OSError, ValueError) as e:
            raise SelfCascadeError(str(e)) from None
    save_path = save_path_for(args.output_name, os.path.abspath(args.output_dir))
    ckpt_path = checkpoint_path_for(save_path)
    if not args.resume and not args.cache_latents_only and parallel.from_rank0(
            lambda: os.path.exists(save_path) or os.path.exists(ckpt_path)):
        raise SelfCascadeError(f"{save_path} (or its checkpoint) already exists; pass --resume to continue it or "
                               "choose another --output_name. Nothing was overwritten.")
    return save_path


def _encode(args, cfg, parallel):
    """(model, clip, encoded items, caption texts, cache folder): the folder scanned, the latents read from the
    cache or encoded (the VAE is loaded only when one is missing)."""
    from self_cascade.nodes.common import SelfCascadeError
    from self_cascade.nodes.training.folder import cached_keys, encode_folder, scan_folder
    from tqdm import tqdm

    writer = parallel.is_writer
    vae_id = _file_id(args.vae or args.checkpoint)
    entries, warnings = parallel.from_rank0(lambda: scan_folder(
        args.train_data_dir, cfg, vae_id, skip_unreadable=args.skip_unreadable_images,
        caption_extension=args.caption_extension))
    for w in warnings if writer else []:
        logger.warning(w)
    cache_dir = None if args.no_latent_cache else os.path.abspath(args.latent_cache or os.path.join(args.output_dir,
                                                                                                     "latent_cache"))
    have = parallel.from_rank0(lambda: cached_keys(cache_dir))
    model, clip, vae = load_models(args, any(e.key not in have for e in entries))
    cell = int(vae.spacial_compression_encode()) if vae is not None else cfg.latent_cell
    if cell != cfg.latent_cell:
        raise SelfCascadeError(f"this VAE has a latent scale of {cell} px, the trainer expects {cfg.latent_cell}.")
    texts = sorted({e.caption or args.prompt for e in entries})
    index = {t: i for i, t in enumerate(texts)}
    bar = tqdm(total=len(entries), desc="encode", disable=not writer, unit="img")
    items, skipped = encode_folder(args.train_data_dir, entries, vae.encode if vae else None, cfg,
                                   int(model.model.diffusion_model.in_channels),
                                   lambda e: index[e.caption or args.prompt], cache_dir=cache_dir, parallel=parallel,
                                   skip_unreadable=args.skip_unreadable_images,
                                   progress=lambda n: bar.update(n * parallel.world_size), have=have)
    bar.close()
    for w in skipped if writer else []:
        logger.warning(w)
    return model, clip, items, texts, cache_dir


def _train(args, cfg, parallel, model, items, conds, empty, save_path: str):
    """train_on_pairs with stop signals, a progress bar and the loss log; (result, seconds, log or None)."""
    from self_cascade.nodes.training import train_on_pairs
    from tqdm import tqdm

    flag = {"signal": None, "rank": parallel.rank, "step": 0}
    previous_handlers = _signals(flag)
    log = LossLog(save_path[: -len(".safetensors")]) if parallel.is_writer else None
    steps_bar = tqdm(total=cfg.steps, desc="train", disable=not parallel.is_writer, unit="step")

    def progress(step: int, total: int, loss: float) -> None:
        flag["step"] = step
        steps_bar.update(step - steps_bar.n)
        steps_bar.set_postfix(loss=f"{loss:.5f}")
        if log is not None:
            log.add(step, loss)

    def interrupt_check() -> None:
        if parallel.any(flag["signal"] is not None):
            raise Stopped(flag["signal"] or "a stop signal on another process")

    started = time.time()
    try:
        result = train_on_pairs(model, items, conds, config=cfg, save_path=save_path, resume=args.resume,
                                interrupt_check=interrupt_check, progress=progress, empty=empty, parallel=parallel)
    finally:
        for sig, old in previous_handlers.items():
            signal.signal(sig, old)
        steps_bar.close()
        if log is not None:
            log.close()
    return result, time.time() - started, log


def run(args, parallel) -> int:
    from self_cascade.nodes.common import SelfCascadeError
    from self_cascade.nodes.training import Parallel, checkpoint_path_for, preflight

    cfg = _config(args)
    preflight(cfg, world_size=parallel.world_size)
    save_path = _check_files(args, parallel)
    ckpt_path = checkpoint_path_for(save_path)
    model, clip, items, texts, cache_dir = _encode(args, cfg, parallel)
    if args.cache_latents_only:
        if parallel.is_writer:
            print(f"cached {len(items)} images in {cache_dir}")
        return 0
    preflight(cfg, n_images=len(items), world_size=parallel.world_size)

    def encode_text(text: str):
        return clip.encode_from_tokens_scheduled(clip.tokenize(text))

    conds = [encode_text(t) for t in texts]
    empty = encode_text("") if cfg.caption_dropout > 0 or cfg.pivot_mode == "generated" else None
    if parallel.is_writer:
        os.makedirs(args.output_dir, exist_ok=True)
        logger.info("%d images, %d captions; %d process(es), global batch %d (%s per process); %d steps -> %s",
                    len(items), len(texts), parallel.world_size, cfg.batch_size,
                    "/".join(str(len(Parallel(r, parallel.world_size).rows(cfg.batch_size)))
                             for r in range(parallel.world_size)), cfg.steps, save_path)
    result, seconds, log = _train(args, cfg, parallel, model, items, conds, empty, save_path)
    if result.file_path is None:
        where = (f"the last good checkpoint (step {result.checkpoint_step}) is kept at {ckpt_path}"
                 if result.checkpoint_step else "no checkpoint had been written yet")
        raise SelfCascadeError(f"training stopped: {result.stopped_reason}; {where}. No set was written. Resume "
                               "with a lower --learning_rate, or check the images and the VAE.")
    if parallel.is_writer:
        log.write_final(result.losses, {"steps": result.steps_done, "processes": parallel.world_size,
                                        "seconds_this_run": round(seconds, 3),
                                        "config": vars(args) | {"resolution": [cfg.width, cfg.height]}})
        print(f"saved {save_path} ({result.steps_done} steps, {result.stopped_reason}); checkpoint {ckpt_path}; "
              f"loss log {log.csv}, {log.json}, plot {log.png}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    use_cuda = torch.cuda.is_available() and not args.cpu
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"[rank {rank}] %(levelname)s %(name)s: %(message)s")
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist = None
    if world > 1:
        import torch.distributed as dist

        dist.init_process_group("nccl" if use_cuda else "gloo",
                                timeout=datetime.timedelta(minutes=args.dist_timeout_minutes))
    start(args.comfyui, cpu=not use_cuda)
    from self_cascade.nodes.common import SelfCascadeError
    from self_cascade.nodes.training import Parallel, checkpoint_path_for, save_path_for

    parallel = Parallel.from_process_group()
    try:
        return run(args, parallel)
    except SelfCascadeError as e:
        if parallel.is_writer:
            print(f"error: {e}", file=sys.stderr)
        return 2
    except Stopped as e:
        if parallel.is_writer:
            ckpt = checkpoint_path_for(save_path_for(args.output_name, os.path.abspath(args.output_dir)))
            print(f"stopped by {e} after step {_checkpoint_step(ckpt)}; checkpoint {ckpt} is complete. Run the same "
                  "command with --resume (any number of processes) to continue.", file=sys.stderr)
        return 143
    except Exception as e:
        ckpt = checkpoint_path_for(save_path_for(args.output_name, os.path.abspath(args.output_dir)))
        print(f"[rank {parallel.rank}] training failed: {type(e).__name__}: {e}\n[rank {parallel.rank}] If another "
              f"process died (torchrun names it), this one stops too. The last good checkpoint is {ckpt} "
              f"(step {_checkpoint_step(ckpt)}); every write is atomic, so it is intact. Run the same command with "
              "--resume (any number of processes) to continue.", file=sys.stderr)
        return 1
    finally:
        if dist is not None and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
