"""A write that fails (disk full, I/O error, read-only folder) loses nothing: every file the pack
writes goes through ``upsampler.checkpoint.atomic_write``.

Two ways to fail a write: an OSError injected at each stage of the write (temp file, writing,
chmod, fsync, rename; runs everywhere), and a real tiny tmpfs that fills up or is read-only (needs
root to mount; skipped otherwise). In every case the previous file is intact, no temp file is
left, and the error names the path and what to do; training resumes from its last good checkpoint.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import tempfile

import pytest
import tiny_models
import torch

STAGES = ("mkstemp", "write", "chmod", "fsync", "replace")
ERRORS = {errno.ENOSPC: "free space", errno.EIO: "I/O error", errno.EROFS: "read-only"}


@pytest.fixture(scope="module")
def ck(pack):
    from self_cascade.upsampler import checkpoint

    return checkpoint


def _small_set(variant="light", size=8):
    from self_cascade.nodes.patch import model_family
    from self_cascade.upsampler.modules import UpsamplerSet
    from self_cascade.upsampler.taps import derive_taps, emb_dim

    model = tiny_models.tiny_sd15(0)
    unet = model.get_model_object("diffusion_model")
    return UpsamplerSet.create(derive_taps(unet), emb_dim(unet), model_family(model), variant, size=size)


def _fail_at(monkeypatch, stage: str, code: int, only=lambda path: True):
    """Make the given stage of the next writes raise OSError(code) (``only``: for which target paths)."""
    def boom(*_a, **_k):
        raise OSError(code, os.strerror(code))

    if stage == "mkstemp":
        real = tempfile.mkstemp
        monkeypatch.setattr(tempfile, "mkstemp", lambda *a, **k: boom() if only(k.get("prefix", "")) else real(*a, **k))
    elif stage == "chmod":
        monkeypatch.setattr(os, "chmod", boom)
    elif stage == "fsync":
        monkeypatch.setattr(os, "fsync", boom)
    elif stage == "replace":
        real_replace = os.replace
        monkeypatch.setattr(os, "replace", lambda src, dst: boom() if only(str(dst)) else real_replace(src, dst))


def _writer(data: bytes, stage: str, code: int):
    """Writes ``data``; at the 'write' stage it writes half of it and then fails like a full disk."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            if stage == "write":
                fh.write(data[: len(data) // 2])
                raise OSError(code, os.strerror(code))
            fh.write(data)
    return write


@pytest.mark.parametrize("code", list(ERRORS))
@pytest.mark.parametrize("stage", STAGES)
def test_failure_at_each_stage_keeps_the_old_file(ck, tmp_path, monkeypatch, stage, code):
    path = tmp_path / "set.safetensors"
    path.write_bytes(b"old contents")
    with monkeypatch.context() as m:
        _fail_at(m, stage, code)
        with pytest.raises(ck.WriteFailedError) as info:
            ck.atomic_write(str(path), _writer(b"new contents " * 100, stage, code))
    assert path.read_bytes() == b"old contents", "the previous file was changed"
    assert [p.name for p in tmp_path.iterdir()] == ["set.safetensors"], "a temp file was left behind"
    msg = str(info.value)
    assert info.value.errno == code and str(path) in msg and "unchanged" in msg and ERRORS[code] in msg, msg
    # and with no previous file, nothing at all is left
    fresh = tmp_path / "new" / "fresh.safetensors"
    with monkeypatch.context() as m:
        _fail_at(m, stage, code)
        with pytest.raises(ck.WriteFailedError):
            ck.atomic_write(str(fresh), _writer(b"x" * 100, stage, code))
    assert not fresh.exists() and list(fresh.parent.iterdir()) == []


def test_a_bug_in_the_writer_is_not_disguised_as_a_disk_error(ck, tmp_path):
    path = tmp_path / "a.json"
    path.write_text("old")

    def broken(tmp):
        open(tmp, "w").write("partial")
        raise KeyError("no such tensor")

    with pytest.raises(KeyError):
        ck.atomic_write(str(path), broken)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_safetensors_writer_error_is_named_as_disk_full(ck, tmp_path, monkeypatch):
    """safetensors' Rust writer reports ENOSPC as SafetensorError('... (os error 28)'), not OSError:
    it still becomes a WriteFailedError naming the set's path, and the old set stays loadable."""
    import safetensors.torch
    from self_cascade.upsampler.fileformat import load_upsamplers, save_upsamplers

    path = tmp_path / "set.safetensors"
    old = _small_set(size=8)
    save_upsamplers(str(path), old)
    before = path.read_bytes()
    real = safetensors.torch.save_file

    def full_disk(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)  # the temp file gets written, then the disk is full
        raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(ck.WriteFailedError, match=f"could not write '{path}': No space left on device.*free space"):
        save_upsamplers(str(path), _small_set(size=16))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["set.safetensors"]
    assert load_upsamplers(str(path)).info == old.info


@pytest.mark.parametrize("stage", STAGES)
def test_checkpoint_write_failure_names_resume(ck, tmp_path, monkeypatch, stage):
    path = tmp_path / "run.ckpt.safetensors"
    weights = {"w": torch.arange(6.0)}
    ck.save_checkpoint(str(path), ck.Checkpoint(step=3, weights=weights, optimizer={"state": {}, "param_groups": []},
                                                rng={"generator": torch.Generator().get_state()}))
    before = path.read_bytes()
    with monkeypatch.context() as m:
        if stage == "write":
            import safetensors.torch

            def enospc(*_a, **_k):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            m.setattr(safetensors.torch, "save_file", enospc)
        else:
            _fail_at(m, stage, errno.ENOSPC)
        with pytest.raises(ck.WriteFailedError, match="resume"):
            ck.save_checkpoint(str(path), ck.Checkpoint(step=4, weights={"w": torch.ones(6)},
                                                        optimizer={"state": {}, "param_groups": []}, rng={}))
    assert path.read_bytes() == before and ck.load_checkpoint(str(path)).step == 3
    assert [p.name for p in tmp_path.iterdir()] == ["run.ckpt.safetensors"]


@pytest.mark.parametrize("stage", ["mkstemp", "safetensors"])
def test_official_cache_on_a_full_disk_still_loads(pack, tmp_path, monkeypatch, caplog, stage):
    """The converted .pth cache cannot be written (disk full when the temp file is made, or inside
    safetensors' writer, which reports 'os error 28'): the set is returned converted in memory, a
    warning names the cache path, nothing is left beside the .pth."""
    import safetensors
    import safetensors.torch
    from self_cascade.upsampler import convert
    from test_convert import synthetic_official

    pth = tmp_path / "upsampler_only.pth"
    torch.save(synthetic_official(random_first=False), pth)

    def full(*_a, **_k):
        raise safetensors.SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")

    with monkeypatch.context() as m:
        if stage == "mkstemp":
            _fail_at(m, "mkstemp", errno.ENOSPC)
        else:
            m.setattr(safetensors.torch, "save_file", full)
        uset, converted = convert.load_official_cached(str(pth))
    assert converted and uset.info.variant == "official"
    assert [p.name for p in tmp_path.iterdir()] == ["upsampler_only.pth"]
    assert convert.cache_path(str(pth)) in caplog.text and "No space left" in caplog.text


def _train(pack, model, path, **over):
    from self_cascade.nodes.training import TrainConfig, train_upsamplers
    from test_train import cond, fake_vae_encode, make_images

    cfg = dict(width=64, height=64, scale=2.0, steps=6, learning_rate=1e-2, batch_size=1, seed=0,
               checkpoint_every=2, variant="light", variant_size=8, log_every=100)
    return train_upsamplers(model, make_images(1), fake_vae_encode, cond(), config=TrainConfig(**cfg),
                            save_path=path, interrupt_check=lambda: None, **over)


def test_training_stopped_by_a_full_disk_resumes_from_the_last_good_checkpoint(pack, ck, tmp_path, monkeypatch):
    """The disk fills up after the step-2 checkpoint: training stops with an error naming the
    checkpoint and 'resume'; the step-2 checkpoint is intact; resumed with space again, the run
    ends exactly where an uninterrupted run does."""
    from self_cascade.upsampler.fileformat import load_upsamplers

    full = _train(pack, tiny_models.tiny_sd15(0), str(tmp_path / "ref" / "full.safetensors"))
    path = str(tmp_path / "cut" / "cut.safetensors")
    ckpt = path.replace(".safetensors", ck.CKPT_SUFFIX)
    real_replace, writes = os.replace, {"n": 0}

    def replace(src, dst):
        if str(dst).endswith(ck.CKPT_SUFFIX):
            writes["n"] += 1
            if writes["n"] >= 2:  # the first checkpoint fits, then the disk stays full
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_replace(src, dst)

    with monkeypatch.context() as m:
        m.setattr(os, "replace", replace)
        with pytest.raises(ck.WriteFailedError, match=f"could not write '{ckpt}'.*resume"):
            _train(pack, tiny_models.tiny_sd15(0), path)
    assert sorted(os.listdir(os.path.dirname(path))) == [os.path.basename(ckpt)], "temp file or final file left"
    assert ck.load_checkpoint(ckpt).step == 2
    res = _train(pack, tiny_models.tiny_sd15(0), path, resume=True)
    assert res.steps_done == 6 and res.stopped_reason == "completed"
    assert res.losses == pytest.approx(full.losses, rel=1e-4, abs=1e-6)
    ref, got = load_upsamplers(str(tmp_path / "ref" / "full.safetensors")), load_upsamplers(path)
    for k, v in ref.state_dict().items():
        assert torch.allclose(v, got.state_dict()[k], atol=1e-5), k


# --- a real small file system -------------------------------------------------------------------

def _mount(point, *opts):
    return subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(opts), "tmpfs", str(point)],
                          capture_output=True, text=True).returncode == 0


@pytest.fixture
def tiny_fs(tmp_path):
    """A 320 KiB tmpfs (real ENOSPC, and EROFS after a read-only remount); skipped where mounting is not allowed."""
    point = tmp_path / "fs"
    point.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount") or not _mount(point, "size=320k", "mode=0777"):
        pytest.skip("mounting a small tmpfs needs root; the injected-OSError tests above cover the same stages")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)


def test_real_full_and_read_only_file_system(pack, ck, tiny_fs):
    from self_cascade.upsampler.fileformat import load_upsamplers, save_upsamplers

    path = tiny_fs / "set.safetensors"
    small = _small_set(size=8)
    save_upsamplers(str(path), small)
    before = path.read_bytes()
    big = _small_set("official")  # several MB: cannot fit
    assert sum(v.numel() * 4 for v in big.state_dict().values()) > 2 * 320 * 1024
    with pytest.raises(ck.WriteFailedError, match=f"could not write '{path}': No space left on device"):
        save_upsamplers(str(path), big)
    assert path.read_bytes() == before and os.listdir(tiny_fs) == ["set.safetensors"]
    assert load_upsamplers(str(path)).info == small.info
    assert subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], capture_output=True).returncode == 0
    with pytest.raises(ck.WriteFailedError, match="read-only file system"):
        save_upsamplers(str(path), _small_set(size=16))
    assert path.read_bytes() == before and os.listdir(tiny_fs) == ["set.safetensors"]


def test_cli_live_loss_log_keeps_earlier_rows_on_a_full_disk(pack, ck, tmp_path, monkeypatch):
    """A resumed CLI run rewrites its live loss CSV (earlier rows kept) before appending: on a full
    disk that rewrite fails with the path named and the earlier rows intact."""
    from test_train_cli import _cli

    stem = str(tmp_path / "run")
    csv = tmp_path / "run.loss.csv"
    csv.write_text("step,loss\n1,0.5\n2,0.4\n3,0.3\n")
    log = _cli().LossLog(stem)
    with monkeypatch.context() as m:
        _fail_at(m, "replace", errno.ENOSPC)
        with pytest.raises(ck.WriteFailedError, match="run.loss.csv"):
            log.add(3, 0.25)
    assert csv.read_text() == "step,loss\n1,0.5\n2,0.4\n3,0.3\n" and os.listdir(tmp_path) == ["run.loss.csv"]
    log.add(3, 0.25)
    log.add(4, 0.2)
    log.close()
    assert csv.read_text() == "step,loss\n1,0.5\n2,0.4\n3,0.25\n4,0.2\n"
