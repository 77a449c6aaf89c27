"""The README's main job (dev/main_job.py): the embedded default writes base/direct/TF/T images;
with --checkpoint it runs shipped workflow 1 on the real server (here: the test-built checkpoint)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "dev" / "main_job.py"), *args], capture_output=True,
                          text=True, timeout=900)


def test_embedded_default_writes_comparison_and_images(tmp_path):
    proc = _run("--out", str(tmp_path), "--seeds", "5", "--steps", "4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"images in {tmp_path}" in proc.stdout
    for name in ("base", "direct", "cascade", "cascade_tuned"):
        img = Image.open(tmp_path / f"{name}_seed5.png")
        assert img.size == ((16, 16) if name == "base" else (64, 64))
    direct = Image.open(tmp_path / "direct_seed5.png").tobytes()
    tf, tuned = (Image.open(tmp_path / f"{n}_seed5.png").tobytes() for n in ("cascade", "cascade_tuned"))
    assert direct != tf and tf != tuned  # the committed toy upsampler set changes the tuned column
    sheet = Image.open(tmp_path / "comparison.png")
    assert sheet.size[0] > 4 * 64 * 4 and sheet.size[1] > 64 * 4
    assert "torchaudio" not in proc.stdout + proc.stderr  # ComfyUI's start-up chatter is kept out


def test_checkpoint_runs_shipped_workflow_1_headless(tmp_path, tiny_checkpoint_file):
    out = tmp_path / "out"
    proc = _run("--checkpoint", str(tiny_checkpoint_file), "--out", str(out), "--width", "32", "--height", "32",
                "--steps", "3", "--prompt", "a tiny test")
    assert proc.returncode == 0, proc.stderr[-3000:]
    images = sorted(out.glob("sd15_cascade_2048*.png"))
    assert len(images) == 1 and str(images[0]) in proc.stdout
    assert Image.open(images[0]).size == (128, 128)  # 32 -> 64 -> 128: both stages ran


def test_missing_checkpoint_file_is_explained(tmp_path):
    proc = _run("--checkpoint", str(tmp_path / "nope.safetensors"))
    assert proc.returncode != 0 and "no such file" in proc.stderr
