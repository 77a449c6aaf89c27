"""scripts/train_upsamplers.py: the command-line trainer, on the CPU with the tiny SD1.5 checkpoint.

Real parts throughout: torchrun with 2 processes (gloo), ComfyUI's checkpoint loader, its CLIP
and VAE, the shared training core, the live server's Upsampler Loader. One run per process
count is shared by the tests of this module (``cli_runs``): A one process, B two processes,
C two processes whose rank 1 is killed (SIGKILL, through tests/train_cli_killed.py) after the
checkpoint of step 2, D one process resuming C. The one-process runs (A, D) and the error cases
call the script's ``main()`` in the test process (ComfyUI is imported there already), the
two-process runs are real ``torchrun`` launches.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "train_upsamplers.py"
KILLED = REPO / "tests" / "train_cli_killed.py"
TORCHRUN = Path(sys.executable).parent / "torchrun"
STEPS = 4
ARGS = ["--resolution", "64", "--scale", "2", "--max_train_steps", str(STEPS), "--global_batch_size", "2",
        "--learning_rate", "1e-3", "--save_every_n_steps", "2", "--variant", "light", "--variant_size", "16",
        "--prompt", "a pattern", "--output_name", "cli", "--cpu", "--log_every", "1"]


def _write_images(folder: Path, n: int = 3, size: tuple[int, int] = (96, 64)) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w] / h
    for i in range(n):
        rgb = np.stack([np.sin((3 + i) * xx), np.cos((2 + i) * yy), np.sin(3 * (xx + yy) + i)], -1) * 0.5 + 0.5
        Image.fromarray((rgb * 255).astype(np.uint8)).save(folder / f"img{i}.png")
    (folder / "img0.txt").write_text("a striped red pattern")  # two captions: batches mix conditionings


def _env() -> dict:
    import hostenv

    paths = hostenv.extra_pythonpath()  # ComfyUI's root, and the torchvision stub where needed
    return {**os.environ, "COMFYUI_PATH": paths[0], "PYTHONPATH": os.pathsep.join(paths[1:]),
            "OMP_NUM_THREADS": "1"}


def _launch(nproc: int, out: Path, data: Path, ckpt: Path, *extra: str, kill: str = ""):
    """``torchrun --standalone --nproc_per_node nproc`` of the script (gloo on the CPU). ``kill`` "RANK:STEP":
    through tests/train_cli_killed.py, which kills that rank after that step (the script has no such hook)."""
    env = _env()
    cmd = [str(TORCHRUN), "--standalone", "--nproc_per_node", str(nproc)]
    if kill:
        cmd += [str(KILLED), kill]
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SCRIPT.parent), env["PYTHONPATH"]) if p)
    else:
        cmd += [str(SCRIPT)]
    cmd += ["--checkpoint", str(ckpt), "--train_data_dir", str(data), "--output_dir", str(out),
            "--latent_cache", str(out.parent / "cache"), *ARGS, *extra]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, cwd=out.parent)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


class _InProcess:
    """The result of ``main()`` run in this process, shaped like a CompletedProcess."""

    def __init__(self, returncode: int, log: str):
        self.returncode, self.stdout, self.stderr = returncode, "", log


def _in_process(out: Path, data: Path, ckpt: Path, *extra: str) -> _InProcess:
    """One process, in the test process (its imports are already done): ``main()`` with the same arguments."""
    import logging

    import hostenv

    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        rc = _cli().main(["--checkpoint", str(ckpt), "--train_data_dir", str(data), "--output_dir", str(out),
                          "--latent_cache", str(out.parent / "cache"), *ARGS, "--comfyui",
                          hostenv.extra_pythonpath()[0], *extra])
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
    return _InProcess(rc, "\n".join(lines))


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory, tiny_checkpoint_file, pack):
    root = tmp_path_factory.mktemp("cli")
    data = root / "data"
    _write_images(data)
    runs = {}
    runs["A"] = _in_process(root / "A", data, tiny_checkpoint_file)  # one process; encodes and fills the cache
    runs["B"] = _launch(2, root / "B", data, tiny_checkpoint_file)
    runs["C"] = _launch(2, root / "C", data, tiny_checkpoint_file, kill="1:2")
    from self_cascade.upsampler.checkpoint import load_checkpoint

    c_ckpt = root / "C" / "cli.ckpt.safetensors"
    runs["C_state"] = {"final_exists": (root / "C" / "cli.safetensors").exists(),
                       "ckpt_step": load_checkpoint(str(c_ckpt)).step if c_ckpt.exists() else None}
    runs["D"] = _in_process(root / "C", data, tiny_checkpoint_file, "--resume")  # resumed by one process
    runs["root"] = root
    return runs


def _ok(proc) -> None:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]


def test_two_processes_give_the_one_process_weights(pack, cli_runs):
    from self_cascade.upsampler.fileformat import load_upsamplers

    _ok(cli_runs["A"])
    _ok(cli_runs["B"])
    root = cli_runs["root"]
    assert "2 process(es), global batch 2 (1/1 per process)" in cli_runs["B"].stderr
    a, b = _weights(root / "A" / "cli.safetensors"), _weights(root / "B" / "cli.safetensors")
    assert _max_diff(a, b) <= 1e-5
    assert any(float(v.abs().max()) > 0 for k, v in a.items() if k.endswith("weight")), "still all zero"
    uset = load_upsamplers(str(root / "B" / "cli.safetensors"))
    assert uset.info.steps == STEPS and uset.info.family == "SD15" and uset.info.variant == "light"
    # the loss log and plot: one row per step, the same losses in both runs
    rows = (root / "B" / "cli.loss.csv").read_text().splitlines()
    assert rows[0] == "step,loss" and [int(r.split(",")[0]) for r in rows[1:]] == list(range(1, STEPS + 1))
    la = json.loads((root / "A" / "cli.loss.json").read_text())["losses"]
    lb = json.loads((root / "B" / "cli.loss.json").read_text())["losses"]
    assert lb == pytest.approx(la, rel=1e-5) and len(la) == STEPS
    assert (root / "B" / "cli.loss.png").stat().st_size > 0
    # only rank 0 wrote: exactly the set, its checkpoint and the logs (plus the shared latent cache)
    assert sorted(p.name for p in (root / "B").iterdir()) == sorted(
        ["cli.safetensors", "cli.ckpt.safetensors", "cli.loss.csv", "cli.loss.json", "cli.loss.png"])
    assert len(list((root / "cache").glob("*.safetensors"))) == 3


def test_killed_rank_keeps_checkpoint_and_resumes_with_another_process_count(pack, cli_runs):
    c, state = cli_runs["C"], cli_runs["C_state"]
    assert c.returncode != 0
    assert "SIGKILL" in c.stderr, c.stderr[-3000:]  # torchrun names the killed rank
    assert "The last good checkpoint is" in c.stderr and "--resume" in c.stderr
    assert state == {"final_exists": False, "ckpt_step": 2}
    _ok(cli_runs["D"])
    root = cli_runs["root"]
    assert "resumed cli.ckpt.safetensors at step 2" in cli_runs["D"].stderr
    a, d = _weights(root / "A" / "cli.safetensors"), _weights(root / "C" / "cli.safetensors")
    assert _max_diff(a, d) <= 1e-5
    rows = (root / "C" / "cli.loss.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(1, STEPS + 1))


def test_cli_set_loads_and_patches_a_model_through_the_server(pack, cli_runs, comfy_server, client, tiny_checkpoint):
    import safetensors.torch

    _ok(cli_runs["A"])
    folder = comfy_server.base_dir / "models" / "self_cascade"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(cli_runs["root"] / "A" / "cli.safetensors", folder / "cli_trained.safetensors")

    def stage(with_set: bool, prefix: str) -> torch.Tensor:
        prompt = {
            "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": tiny_checkpoint}},
            "5": {"class_type": "CLIPTextEncode", "inputs": {"text": "a pattern", "clip": ["1", 1]}},
            "6": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
            "7": {"class_type": "SelfCascadeStage", "inputs": {
                "model": ["1", 0], "positive": ["5", 0], "negative": ["5", 0], "latent": ["6", 0], "scale": 2.0,
                "upscale_method": "bicubic", "seed": 1, "steps": 3, "cfg": 1.0, "sampler_name": "euler",
                "scheduler": "normal", "K": 700.0}},
            "8": {"class_type": "SaveLatent", "inputs": {"samples": ["7", 0], "filename_prefix": prefix}},
        }
        if with_set:
            prompt["4"] = {"class_type": "SelfCascadeUpsamplerLoader",
                           "inputs": {"upsampler_name": "cli_trained.safetensors"}}
            prompt["7"]["inputs"]["upsamplers"] = ["4", 0]
        f = client.run(prompt, timeout=300)["outputs"]["8"]["latents"][0]
        path = comfy_server.base_dir / "output" / f["subfolder"] / f["filename"]
        return safetensors.torch.load_file(str(path))["latent_tensor"]

    patched, plain = stage(True, "cli_with"), stage(False, "cli_without")
    assert patched.shape == plain.shape == (1, 4, 8, 8) and torch.isfinite(patched).all()
    assert not torch.allclose(patched, plain), "the trained set did not change the stage's output"


def _cli():
    spec = importlib.util.spec_from_file_location("train_upsamplers_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_help_speaks_the_usual_trainer_terms(pack, capsys):
    with pytest.raises(SystemExit) as e:
        _cli().main(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for term in ("--train_data_dir", "--output_dir", "--resolution", "--max_train_steps", "--global_batch_size",
                 "--learning_rate", "--save_every_n_steps", "--resume", "--mixed_precision", "--gradient_checkpointing",
                 "--caption_extension", "torchrun", "not per GPU"):
        assert term in text, term


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist or is not a folder"),
    ("empty", "has no images"),
    ("size", "must be multiples of 8 pixels"),
    ("unreadable", r"1 file\(s\) in .* could not be read: bad.png .*--skip_unreadable_images"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(pack, tmp_path, capsys, case, message):
    import re

    data = tmp_path / "data"
    if case != "missing":
        data.mkdir()
    if case in ("size", "unreadable"):
        _write_images(data, n=1)
    if case == "unreadable":
        (data / "bad.png").write_bytes(b"not a png at all")
    ckpt = tmp_path / "model.safetensors"  # never loaded: every check here runs before the model is read
    ckpt.write_bytes(b"")
    out = tmp_path / "out"
    import hostenv

    args = ["--checkpoint", str(ckpt), "--train_data_dir", str(data), "--output_dir", str(out), *ARGS,
            "--comfyui", hostenv.extra_pythonpath()[0]]
    if case == "size":
        args += ["--resolution", "60"]
    assert _cli().main(args) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert not out.exists() or not any(out.iterdir()), "no partial output"


def test_unreadable_images_can_be_skipped_with_a_warning(pack, tmp_path):
    from self_cascade.nodes.training import TrainConfig
    from self_cascade.nodes.training.folder import scan_folder

    _write_images(tmp_path, n=2)
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    cfg = TrainConfig(width=64, height=64)
    entries, warnings = scan_folder(str(tmp_path), cfg, "vae", skip_unreadable=True)
    assert [e.name for e in entries] == ["img0.png", "img1.png"] and entries[0].caption == "a striped red pattern"
    assert len(warnings) == 1 and "bad.png" in warnings[0]
    keys = {e.key for e in entries}
    other = scan_folder(str(tmp_path), cfg, "other vae", skip_unreadable=True)[0]
    assert len(keys) == 2 and keys.isdisjoint(e.key for e in other), "a different VAE must not reuse the cache"
