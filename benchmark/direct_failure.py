"""Step 1 of the benchmark, before anything is tuned: does direct inference fail at 4x / 16x pixels?

    .host/venv/bin/python benchmark/direct_failure.py [--samples 32] [--weights PATH]

Samples the base model at its own size (16x16) and directly at 32x32 (4x pixels), 64x64 (16x) and
32x48 (4x, non-square; base 16x24) with ComfyUI's KSampler path (euler, normal, 20 steps, cfg 1),
and prints the share of samples with exactly one object plus the object-count histogram.
Writes benchmark/results/direct_failure.md unless --out says otherwise.
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import hostenv  # the dev host harness (dev/ is on the host venv's path)
import torch

hostenv.start()
REPO = Path(__file__).resolve().parent.parent
from self_cascade.benchmark import metrics as mt  # noqa: E402
from self_cascade.benchmark import model as bm  # noqa: E402
from self_cascade.benchmark import scenes  # noqa: E402

SIZES = [("base", (16, 16)), ("4x", (32, 32)), ("16x", (64, 64)), ("base non-square", (16, 24)),
         ("4x non-square", (32, 48))]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--weights", default=str(bm.WEIGHTS))
    ap.add_argument("--out", default=str(REPO / "benchmark" / "results" / "direct_failure.md"))
    args = ap.parse_args(argv)
    torch.set_num_threads(2)
    import comfy.utils

    import nodes  # ComfyUI's nodes.py

    comfy.utils.PROGRESS_BAR_ENABLED = False
    model = bm.load_base_model(args.weights)
    lines = ["# Direct inference before any tuning (miniature model, not SD)", "",
             f"Command: `python benchmark/direct_failure.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
             f"Weights: {Path(args.weights).name}; {args.samples} samples, euler/normal, {args.steps} steps, cfg 1.", "",
             "| Size (HxW) | Exactly one object | Object-count histogram | Seconds |", "|---|---|---|---|"]
    for name, hw in SIZES:
        t = time.perf_counter()
        lat = nodes.common_ksampler(model, args.seed, args.steps, 1.0, "euler", "normal", bm.positive(), bm.negative(),
                                    {"samples": torch.zeros(args.samples, 3, *hw)})[0]["samples"]
        dt = time.perf_counter() - t
        counts = mt.count_objects(scenes.from_latent(lat))
        hist = dict(sorted(collections.Counter(counts).items()))
        rate = sum(c == 1 for c in counts) / len(counts)
        lines.append(f"| {name} {hw[0]}x{hw[1]} | {rate:.2f} | {hist} | {dt:.0f} |")
        print(lines[-1], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
