"""The main job (``dev/run``): Self-Cascade end to end, writing images a newcomer can look at.

- No arguments: the embedded default. The small pixel-space model trained for the benchmark
  (benchmark/miniature/model.py, weights in benchmark/weights/; ~1 M parameters, procedural scenes, not
  Stable Diffusion) samples a 16x16 base image, a direct 64x64 image (the same model asked for
  16x the pixels at once), the tuning-free Self-Cascade 16 -> 32 -> 64 (the pack's
  ``cascade_stage``, K=700) and the tuned one with the small upsampler set committed beside the
  weights (benchmark/weights/toy_upsamplers.safetensors, read by the pack's file loader), for a
  few seeds. Writes into ``out/main_job/``: ``comparison.png`` (rows = seeds; columns = base,
  direct, TF, T; enlarged 4x, nearest) and each image separately.
- ``--checkpoint /path/to/sd15.safetensors``: starts the real ComfyUI server (dev host) with the
  pack, links the checkpoint into its models/checkpoints/, runs shipped workflow 1
  (workflows/api/sd15_cascade_2048.json, 512 -> 1024 -> 2048) headless with queue_workflow.py's
  overrides and saves the 2048 px image into ``out/main_job/``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import sys
import tempfile
import time
from pathlib import Path

import hostenv  # this folder: the dev host harness

REPO = Path(__file__).resolve().parent.parent

DEFAULT_OUT = REPO / "out" / "main_job"
log = logging.getLogger("main_job")  # this script's progress; ComfyUI's own INFO chatter stays hidden
ZOOM = 4


@contextlib.contextmanager
def quiet_startup():
    """Hide ComfyUI's import-time chatter (device banner, optional-module warnings); shown on failure."""
    buf = io.StringIO()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            yield
    except BaseException:
        sys.stderr.write(buf.getvalue())
        raise
    finally:
        root.setLevel(level)


def embedded_default(out: Path, seeds: list[int], steps: int) -> list[Path]:
    """Base vs direct vs tuning-free cascade vs tuned cascade on the benchmark's small model, in process."""
    import torch

    with quiet_startup():
        hostenv.start()
        import comfy.utils
        from PIL import Image, ImageDraw
        from self_cascade.benchmark.miniature import model as bm
        from self_cascade.benchmark.miniature import scenes
        from self_cascade.nodes.cascade import StageSettings, cascade_stage
        from self_cascade.upsampler.fileformat import load_upsamplers

        import nodes as comfy_nodes  # ComfyUI's nodes.py (its root is first on the path)

    comfy.utils.PROGRESS_BAR_ENABLED = False
    torch.set_num_threads(1)  # many small ops: a second thread mostly spins, and badly on a busy machine

    for path, how in ((bm.WEIGHTS, "benchmark/train_base.py"), (bm.TOY_UPSAMPLERS, "benchmark/evaluate.py "
                                                                "--save-upsamplers")):
        if not path.is_file():
            raise SystemExit(f"the embedded default needs {path.relative_to(REPO)} (made by {how})")
    with quiet_startup():
        model = bm.load_base_model()
    # the toy upsampler set, read by the pack's own file loader (as the Upsampler Loader node does)
    upsamplers = load_upsamplers(str(bm.TOY_UPSAMPLERS))
    pos, neg = bm.positive(), bm.negative()
    base_hw, target_hw = (16, 16), (64, 64)
    stage = StageSettings(scale=2.0, upscale_method="bicubic", steps=steps, cfg=1.0, sampler_name="euler",
                          scheduler="normal", K=700.0)

    def ksample(latent: torch.Tensor, seed: int) -> torch.Tensor:
        return comfy_nodes.common_ksampler(model, seed, steps, 1.0, "euler", "normal", pos, neg,
                                           {"samples": latent})[0]["samples"]

    def cascade(base: torch.Tensor, seed: int, ups) -> torch.Tensor:
        lat = {"samples": base}
        for _ in range(2):  # 16 -> 32 -> 64; the pixel-space model has no 8 px latent cell, so scale is used
            lat = cascade_stage(model, pos, neg, lat, stage.replace(seed=seed), ups, disable_pbar=True)
        return lat["samples"]

    names = ("base", "direct", "cascade", "cascade_tuned")
    out.mkdir(parents=True, exist_ok=True)
    rows, written = [], []
    for seed in seeds:
        t0 = time.perf_counter()
        base = ksample(torch.zeros(1, 3, *base_hw), seed)
        latents = (base, ksample(torch.zeros(1, 3, *target_hw), seed), cascade(base, seed, None),
                   cascade(base, seed, upsamplers))
        row = {}
        for name, latent in zip(names, latents, strict=True):
            arr = (scenes.from_latent(latent)[0].numpy() * 255).round().astype("uint8")
            img = Image.fromarray(arr)
            path = out / f"{name}_seed{seed}.png"
            img.save(path)
            written.append(path)
            row[name] = img
        rows.append(row)
        log.info("seed %d: base %s, direct / cascade / tuned cascade %s in %.1fs", seed, base_hw, target_hw,
                     time.perf_counter() - t0)
    cell, pad, head = target_hw[1] * ZOOM, 8, 22
    sheet = Image.new("RGB", (len(names) * cell + (len(names) + 1) * pad, len(rows) * (cell + pad) + pad + head),
                      (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    labels = (f"base {base_hw[1]}px (enlarged)", f"direct {target_hw[1]}px", f"Self-Cascade TF {target_hw[1]}px",
              f"Self-Cascade T {target_hw[1]}px")
    for c, label in enumerate(labels):
        draw.text((pad + c * (cell + pad), 6), label, fill=(255, 255, 255))
    for r, row in enumerate(rows):
        for c, name in enumerate(names):
            sheet.paste(row[name].resize((cell, cell), Image.NEAREST), (pad + c * (cell + pad), head + r * (cell + pad)))
    comparison = out / "comparison.png"
    sheet.save(comparison)
    return [comparison, *written]


def with_checkpoint(ckpt: Path, out: Path, overrides: list[str]) -> list[Path]:
    """Shipped workflow 1 on the real server with the user's checkpoint."""
    hostenv.load_pack()
    from self_cascade.workflows.api import queue_workflow

    if not ckpt.is_file():
        raise SystemExit(f"--checkpoint {ckpt}: no such file")
    with tempfile.TemporaryDirectory(prefix="self_cascade_main_") as tmp:
        base = Path(tmp)
        (base / "models" / "checkpoints").mkdir(parents=True)
        (base / "models" / "checkpoints" / ckpt.name).symlink_to(ckpt.resolve())
        server = hostenv.start_server(base)
        log.info("ComfyUI started at %s (log: %s)", server.url, server.log_path)
        try:
            args = ["sd15_cascade_2048", "--server", server.url, "--checkpoint", ckpt.name, "--out", str(out),
                    *overrides]
            rc = queue_workflow.main(args)
            if rc != 0:
                raise SystemExit(f"workflow failed (exit {rc}); server log tail:\n{server.log()[-3000:]}")
        finally:
            server.stop()
    return sorted(out.glob("sd15_cascade_2048*.png"), key=lambda p: p.stat().st_mtime)[-1:]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, help="an SD1.5/SD2.1 .safetensors: run shipped workflow 1 (2048 px)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="folder for the images")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="embedded default: seeds (rows)")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default: 20 embedded, 30 in workflow 1)")
    ap.add_argument("--prompt", help="with --checkpoint: the prompt")
    ap.add_argument("--seed", type=int, help="with --checkpoint: the seed")
    ap.add_argument("--width", type=int, help="with --checkpoint: base width (default 512)")
    ap.add_argument("--height", type=int, help="with --checkpoint: base height (default 512)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    t0 = time.perf_counter()
    if args.checkpoint:
        over = []
        for flag in ("prompt", "seed", "width", "height", "steps"):
            if getattr(args, flag) is not None:
                over += [f"--{flag}", str(getattr(args, flag))]
        paths = with_checkpoint(args.checkpoint, args.out, over)
    else:
        paths = embedded_default(args.out, args.seeds, args.steps or 20)
    print(f"done in {time.perf_counter() - t0:.1f}s; images in {args.out}:")
    for p in paths:
        print(f"  {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
