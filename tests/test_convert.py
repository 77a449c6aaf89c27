"""Official upsampler_only.pth -> our format, on a synthetic state dict of the official names and shapes.

Most tensors are stride-0 expansions of one distinct value each (a few bytes on disk each, full
SDXL shapes after loading); upsampler 0 gets real random weights for the forward check.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_upsampler_modules import hand_resblock

REPO = Path(__file__).resolve().parent.parent
CHANNELS = (320, 640, 1280, 1280)
EMB = 1280


def official_shapes() -> dict[str, tuple[int, ...]]:
    shapes = {}
    for i, c in enumerate(CHANNELS):
        for j in (0, 1):
            p = f"unet.feature_upsampler{i}.{j}."
            shapes.update({p + "in_layers.0.weight": (c,), p + "in_layers.0.bias": (c,),
                           p + "in_layers.2.weight": (c, c, 3, 3), p + "in_layers.2.bias": (c,),
                           p + "emb_layers.1.weight": (c, EMB), p + "emb_layers.1.bias": (c,),
                           p + "out_layers.0.weight": (c,), p + "out_layers.0.bias": (c,),
                           p + "out_layers.3.weight": (c, c, 3, 3), p + "out_layers.3.bias": (c,)})
    return shapes


def synthetic_official(random_first: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    sd = {}
    for n, (key, shape) in enumerate(sorted(official_shapes().items())):
        if random_first and key.startswith("unet.feature_upsampler0."):
            sd[key] = 0.05 * torch.randn(shape, generator=g)
        else:
            sd[key] = torch.tensor(float(n + 1)).expand(shape)
    return sd


@pytest.fixture(scope="module")
def convert(pack):
    from self_cascade.upsampler import convert

    return convert


def test_key_mapping_and_forward_of_converted_set(convert, tmp_path):
    sd = synthetic_official()
    assert len(sd) == 80
    path = tmp_path / "upsampler_only.pth"
    # Lightning checkpoints nest the weights under 'state_dict' next to the frozen UNet's keys
    torch.save({"state_dict": dict(sd, **{"unet.conv_in.weight": torch.zeros(2)}), "epoch": 3}, path)
    uset = convert.load_official_pth(str(path))
    assert uset.taps == convert.SDXL_TAPS and uset.info.family == "SDXL" and uset.info.emb_dim == 1280
    assert uset.info.variant == "official" and uset.num_params() == 145_457_280
    ours = uset.state_dict()
    assert len(ours) == 80
    for key, value in sd.items():
        i, j, rest = key.removeprefix("unet.feature_upsampler").split(".", 2)
        assert torch.equal(ours[f"ups.{i}.blocks.{j}.{rest}"], value), key
    # forward of upsampler 0 (C=320) == the official layout computed by hand from the official keys
    g = torch.Generator().manual_seed(1)
    x, emb = torch.randn(1, 320, 3, 5, generator=g), torch.randn(1, EMB, generator=g)
    h = hand_resblock(sd, x, emb, up=True, prefix="unet.feature_upsampler0.0.")
    want = hand_resblock(sd, h, emb, up=False, prefix="unet.feature_upsampler0.1.")
    with torch.no_grad():
        got = uset(0, x, emb)
    assert got.shape == (1, 320, 6, 10)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_bad_official_files(convert, tmp_path):
    sd = synthetic_official(random_first=False)
    cases = {
        "missing.pth": ({k: v for k, v in sd.items() if "feature_upsampler3.1" not in k}, "10 of 80 upsampler tensors missing"),
        "shape.pth": (dict(sd, **{"unet.feature_upsampler1.0.in_layers.2.bias": torch.zeros(7)}), r"shape \(7,\), expected \(640,\)"),
        "extra.pth": (dict(sd, **{"unet.feature_upsampler4.0.in_layers.2.bias": torch.zeros(7)}), "unexpected upsampler tensor"),
        "nan.pth": (dict(sd, **{"unet.feature_upsampler0.0.in_layers.0.bias": torch.full((320,), float("nan"))}), "NaN"),
        "list.pth": ([1, 2], "holds a list, not a state dict"),
    }
    for name, (obj, msg) in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(ValueError, match=msg):
            convert.load_official_pth(str(tmp_path / name))
    (tmp_path / "unsafe.pth").write_bytes(b"\x80\x04cos\nsystem\n.")  # a pickle weights_only refuses
    with pytest.raises(ValueError, match="cannot read .*unsafe.pth.* as a weights-only torch file"):
        convert.load_official_pth(str(tmp_path / "unsafe.pth"))


def test_convert_script_writes_a_loadable_safetensors(convert, tmp_path):
    from self_cascade.upsampler.fileformat import load_upsamplers

    src, dst = tmp_path / "upsampler_only.pth", tmp_path / "sdxl_official.safetensors"
    torch.save(synthetic_official(random_first=False), src)
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "convert_official_upsamplers.py"), str(src), str(dst)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "80 tensors, 145,457,280 parameters" in run.stdout
    loaded = load_upsamplers(str(dst))
    assert loaded.taps == convert.SDXL_TAPS
    assert torch.equal(loaded.state_dict()["ups.3.blocks.1.out_layers.3.bias"],
                       synthetic_official(False)["unet.feature_upsampler3.1.out_layers.3.bias"])


def test_refused_pickle_names_the_object_and_the_opt_in(convert, tmp_path):
    """A Lightning file whose extra entries hold an object: weights-only refuses; the CLI says how to opt in."""
    import argparse

    src = tmp_path / "upsampler_only.pth"
    torch.save({"state_dict": synthetic_official(False), "hyper_parameters": argparse.Namespace(lr=1e-5)}, src)
    with pytest.raises(convert.PickleRefusedError, match=r"(?s)Python object argparse\.Namespace.*--trust-pickle"):
        convert.load_official_pth(str(src))
    run = subprocess.run([sys.executable, str(REPO / "scripts" / "convert_official_upsamplers.py"), str(src)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "--trust-pickle" in run.stderr and "argparse.Namespace" in run.stderr, run.stderr
    assert "WARNING" not in run.stderr and sorted(p.name for p in tmp_path.iterdir()) == ["upsampler_only.pth"]
