"""Convert the official Self-Cascade SDXL ``upsampler_only.pth`` to the pack's safetensors format.

Usage: python scripts/convert_official_upsamplers.py upsampler_only.pth ComfyUI/models/self_cascade/sdxl_official.safetensors
Needs only torch and safetensors (no ComfyUI).
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="official upsampler_only.pth")
    ap.add_argument("dst", help="output .safetensors (e.g. in ComfyUI/models/self_cascade/)")
    args = ap.parse_args(argv)
    if not args.dst.endswith(".safetensors"):
        ap.error("dst must end with .safetensors")
    from upsampler import convert, fileformat  # pure torch, importable without ComfyUI

    uset = convert.load_official_pth(args.src)
    fileformat.save_upsamplers(args.dst, uset)
    print(f"wrote {args.dst}: {len(uset.state_dict())} tensors, {uset.num_params():,} parameters, "
          f"taps {[t.block for t in uset.taps]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
