"""Upsampler file format: round trip through the patch, and every Bad input named in the issue."""
from __future__ import annotations

import json
import struct

import pytest
import tiny_models
import torch


@pytest.fixture(scope="module")
def mods(pack):
    from self_cascade.nodes import patch
    from self_cascade.upsampler import fileformat, modules, taps

    return patch, modules, taps, fileformat


def trained_set(model, mods, variant="light", seed=3):
    """A set with non-trivial (random) weights, as after training."""
    patch, modules, taps, _ = mods
    unet = model.get_model_object("diffusion_model")
    uset = modules.UpsamplerSet.create(taps.derive_taps(unet), taps.emb_dim(unet), patch.model_family(model),
                                       variant, size=16, K=600.0, steps=123)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in uset.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return uset


def denoise(model, pivot, seed=0):
    """A short real CFG sampling run (comfy.sample.sample) at twice the pivot's size."""
    import comfy.sample

    noise = torch.randn(1, 4, pivot.shape[-2] * 2, pivot.shape[-1] * 2, generator=torch.Generator().manual_seed(seed))
    return comfy.sample.sample(model, noise, 3, 4.0, "euler", "normal", tiny_models.conditioning(1),
                               tiny_models.conditioning(2), torch.zeros_like(noise), denoise=1.0,
                               disable_pbar=True, seed=seed)


@pytest.mark.parametrize("variant", ["official", "light"])
def test_save_load_apply_round_trip_is_identical(mods, tmp_path, variant):
    patch, _, _, fileformat = mods
    model = tiny_models.tiny_sd15(0)
    uset = trained_set(model, mods, variant)
    path = tmp_path / "set.safetensors"
    fileformat.save_upsamplers(str(path), uset)
    assert [p.name for p in tmp_path.iterdir()] == ["set.safetensors"]  # no temp file left behind
    loaded = fileformat.load_upsamplers(str(path))
    assert loaded.info == uset.info and loaded.info.steps == 123 and loaded.info.K == 600.0
    pivot = torch.randn(1, 4, 4, 6, generator=torch.Generator().manual_seed(5))
    a = denoise(patch.apply_upsamplers(model, uset, pivot, 1.0, 100.0), pivot)
    b = denoise(patch.apply_upsamplers(model, loaded, pivot, 1.0, 100.0), pivot)
    assert torch.equal(a, b) and torch.isfinite(a).all()
    assert not torch.equal(a, denoise(model, pivot))


def test_metadata_mismatch_is_an_error_before_sampling(mods, tmp_path):
    patch, modules, taps, fileformat = mods
    from self_cascade.nodes.common import SelfCascadeError
    from self_cascade.upsampler.convert import SDXL_EMB_DIM, SDXL_TAPS

    sd15 = tiny_models.tiny_sd15(0)
    xl_set = modules.UpsamplerSet.create(SDXL_TAPS, SDXL_EMB_DIM, "SDXL", "light")
    pivot = torch.zeros(1, 4, 4, 4)
    with pytest.raises(SelfCascadeError, match="trained for a SDXL model, but the model is SD15"):
        patch.apply_upsamplers(sd15, xl_set, pivot, 1.0, 100.0)
    # right family, wrong tap channels (e.g. a set for another UNet width)
    unet = sd15.get_model_object("diffusion_model")
    wrong = [taps.Tap(t.block, t.channels * 2, t.downscale) for t in taps.derive_taps(unet)]
    bad = modules.UpsamplerSet.create(wrong, taps.emb_dim(unet), "SD15", "light")
    fileformat.save_upsamplers(str(tmp_path / "w.safetensors"), bad)
    with pytest.raises(SelfCascadeError, match=r"taps .* do not match the model's taps"):
        patch.apply_upsamplers(sd15, fileformat.load_upsamplers(str(tmp_path / "w.safetensors")), pivot, 1.0, 100.0)
    # a tiny SDXL-style set on the tiny SD1-style model: same taps, different family
    xl = tiny_models.tiny_sdxl(0)
    with pytest.raises(SelfCascadeError, match="SDXL"):
        patch.apply_upsamplers(sd15, trained_set(xl, mods), pivot, 1.0, 100.0)
    with pytest.raises(SelfCascadeError, match="channels"):
        patch.apply_upsamplers(sd15, trained_set(sd15, mods), torch.zeros(1, 16, 4, 4), 1.0, 100.0)


def _write(path, data: bytes):
    path.write_bytes(data)
    return str(path)


def test_bad_files_name_the_file_and_the_problem(mods, tmp_path):
    _, _, _, fileformat = mods
    from safetensors.torch import save_file

    E = fileformat.UpsamplerFileError
    model = tiny_models.tiny_sd15(0)
    good = tmp_path / "good.safetensors"
    fileformat.save_upsamplers(str(good), trained_set(model, mods))
    raw = good.read_bytes()
    cases = {
        "truncated.safetensors": (raw[: len(raw) - 100], "truncated"),
        "tiny.safetensors": (b"abc", "not a safetensors file"),
        "pickle.safetensors": (b"\x80\x04\x95" + b"\x00" * 64, "not a safetensors file"),
        "junk_header.safetensors": (struct.pack("<Q", 10) + b"not json!!" + b"\x00" * 8, "header is not JSON"),
    }
    for name, (data, msg) in cases.items():
        with pytest.raises(E, match=f"'{name}'.*{msg}|{msg}.*'{name}'"):
            fileformat.load_upsamplers(_write(tmp_path / name, data))
    torch.save({"a": torch.zeros(2)}, tmp_path / "official.pth")
    with pytest.raises(E, match="'official.pth' is not a safetensors file.*convert"):
        fileformat.load_upsamplers(str(tmp_path / "official.pth"))
    with pytest.raises(E, match="does not exist"):
        fileformat.load_upsamplers(str(tmp_path / "nope.safetensors"))

    from safetensors import safe_open

    with safe_open(str(good), "pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    foreign = tmp_path / "lora.safetensors"
    save_file(tensors, str(foreign), metadata={"format": "pt"})
    with pytest.raises(E, match="'lora.safetensors' is a safetensors file but not a Self-Cascade"):
        fileformat.load_upsamplers(str(foreign))
    newer = tmp_path / "newer.safetensors"
    save_file(tensors, str(newer), metadata=dict(meta, format_version="99"))
    with pytest.raises(E, match="'newer.safetensors' has format version 99"):
        fileformat.load_upsamplers(str(newer))

    key = sorted(tensors)[0]
    missing = tmp_path / "missing.safetensors"
    save_file({k: v for k, v in tensors.items() if k != key}, str(missing), metadata=meta)
    with pytest.raises(E, match=f"'missing.safetensors'.*missing tensors \\['{key}'\\]"):
        fileformat.load_upsamplers(str(missing))
    nan = tmp_path / "nan.safetensors"
    save_file(dict(tensors, **{key: torch.full_like(tensors[key], float("nan"))}), str(nan), metadata=meta)
    with pytest.raises(E, match=f"'nan.safetensors'.*{key}.*NaN"):
        fileformat.load_upsamplers(str(nan))
    shape = tmp_path / "shape.safetensors"
    save_file(dict(tensors, **{key: torch.zeros(3, 3)}), str(shape), metadata=meta)
    with pytest.raises(E, match=f"'shape.safetensors'.*{key} has shape \\(3, 3\\)"):
        fileformat.load_upsamplers(str(shape))
    info = json.loads(meta["info"])
    info["variant"] = "nonexistent"
    odd = tmp_path / "variant.safetensors"
    save_file(tensors, str(odd), metadata=dict(meta, info=json.dumps(info)))
    with pytest.raises(E, match="'variant.safetensors'.*unknown upsampler variant"):
        fileformat.load_upsamplers(str(odd))


def test_non_unet_model_is_refused_naming_the_class(mods):
    """A real ComfyUI DiT (Flux-style class, tiny config on the meta device) behind a ModelPatcher."""
    patch, modules, _, _ = mods
    import comfy.model_patcher
    import comfy.supported_models
    from self_cascade.nodes.common import SelfCascadeError

    cfg = comfy.supported_models.Flux(dict(image_model="flux", in_channels=16, patch_size=2, out_channels=16,
                                           vec_in_dim=32, context_in_dim=32, hidden_size=64, mlp_ratio=2.0,
                                           num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[8, 12, 12],
                                           theta=10000, qkv_bias=True, guidance_embed=False))
    model = comfy.model_patcher.ModelPatcher(cfg.get_model({}, device="cpu"), torch.device("cpu"), torch.device("cpu"))
    uset = modules.UpsamplerSet.create([], 64, "Flux", "light")
    with pytest.raises(SelfCascadeError, match="'model' is a Flux.*not an SD-style UNet.*tuning-free"):
        patch.apply_upsamplers(model, uset, torch.zeros(1, 16, 4, 4), 1.0, 100.0)


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664)])
def test_written_files_respect_the_umask(mods, tmp_path, umask, mode):
    """Sets and training checkpoints are written through mkstemp (private 0o600); they must end with the mode
    a plain open() gives (0o666 minus the umask), so a ComfyUI running as another user can read them."""
    import os

    from self_cascade.upsampler.checkpoint import Checkpoint, save_checkpoint

    patch, _, _, fileformat = mods
    uset = trained_set(tiny_models.tiny_sd15(0), mods)
    old = os.umask(umask)
    try:
        fileformat.save_upsamplers(str(tmp_path / "set.safetensors"), uset)
        save_checkpoint(str(tmp_path / "run.ckpt.safetensors"),
                        Checkpoint(step=1, weights=dict(uset.state_dict()), optimizer={"state": {}, "param_groups": []},
                                   rng={"cpu": torch.get_rng_state()}))
    finally:
        os.umask(old)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt.safetensors", "set.safetensors"]
    for p in tmp_path.iterdir():
        assert oct(p.stat().st_mode & 0o777) == oct(mode), p.name
