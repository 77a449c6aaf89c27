"""``python -m upsampler`` (from the repo root): parameter count of each variant on SD1.5 and SDXL taps."""
from __future__ import annotations

from .convert import SDXL_EMB_DIM, SDXL_TAPS
from .modules import VARIANTS, parameter_counts
from .taps import Tap

#: SD1.x/2.x taps (input 3, 6, 9 + middle; see docs/UPSAMPLERS.md); emb dim 4 * 320.
SD15_TAPS = [Tap(("input", 3), 320, 2), Tap(("input", 6), 640, 4), Tap(("input", 9), 1280, 8),
             Tap(("middle", 0), 1280, 8)]


def main() -> None:
    rows = {"SD1.x/2.x": parameter_counts(SD15_TAPS, 1280), "SDXL": parameter_counts(SDXL_TAPS, SDXL_EMB_DIM)}
    print(f"{'taps':<10} " + " ".join(f"{v + ' (' + VARIANTS[v][2] + ' ' + str(VARIANTS[v][1]) + ')':>34}" for v in VARIANTS)
          + f" {'ratio':>8}")
    for fam, counts in rows.items():
        ratio = counts["official"] / counts["light"]
        print(f"{fam:<10} " + " ".join(f"{counts[v]:>34,}" for v in VARIANTS) + f" {ratio:>7.1f}x")


if __name__ == "__main__":
    main()
