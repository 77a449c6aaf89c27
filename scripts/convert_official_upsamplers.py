"""Convert the official Self-Cascade SDXL ``upsampler_only.pth`` to the pack's safetensors format.

Usage: python scripts/convert_official_upsamplers.py [--trust-pickle] SRC.pth [DST.safetensors]

The Upsampler Loader converts an official ``.pth`` in ComfyUI/models/self_cascade/ by itself on
first load; this script is for doing it ahead of time, or for a file that the safe weights-only
load refuses: ``--trust-pickle`` then unpickles it fully (which can run code from the file: only
for a file you trust) and prints a warning. Without DST the result is written beside SRC as
``<stem>.converted.safetensors``, the cache the loader reads when you pick the ``.pth``.
Needs only torch and safetensors (no ComfyUI).
"""
from __future__ import annotations

import argparse
import sys

from comfy_startup import start  # this folder: the repository's one start-up helper

TRUST_WARNING = ("WARNING: --trust-pickle: the weights-only load refused this file, so it is unpickled fully. "
                 "Full unpickling can run arbitrary code stored in the file; go on only with a file from a "
                 "source you trust (the official Self-Cascade release).")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="official upsampler_only.pth")
    ap.add_argument("dst", nargs="?", help="output .safetensors (default: SRC's folder, <stem>.converted.safetensors, "
                                           "the file the Upsampler Loader uses when you pick the .pth)")
    ap.add_argument("--trust-pickle", action="store_true",
                    help="if the safe weights-only load refuses SRC, unpickle it fully (can run code from the file; "
                         "only for a file you trust). A warning is printed when this happens.")
    args = ap.parse_args(argv)
    if args.dst is not None and not args.dst.endswith(".safetensors"):
        ap.error("dst must end with .safetensors")
    start(comfyui=False)  # the pure-torch core only: no ComfyUI needed
    from self_cascade.upsampler import convert, fileformat

    dst = args.dst or convert.cache_path(args.src)
    try:
        try:
            uset = convert.load_official_pth(args.src)
        except convert.PickleRefusedError:
            if not args.trust_pickle:
                raise
            print(TRUST_WARNING, file=sys.stderr)
            uset = convert.load_official_pth(args.src, trust_pickle=True)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    fileformat.save_upsamplers(dst, uset)
    print(f"wrote {dst}: {len(uset.state_dict())} tensors, {uset.num_params():,} parameters, "
          f"taps {[t.block for t in uset.taps]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
