"""Files that lie: a truncated .safetensors, a header that claims a huge tensor or a huge header
length, header entries that are not tensors, weights of the wrong dtype in a .safetensors set or in
an official .pth. Each is a clear error naming the file, without a large allocation, and the
loader's file list (and a good file beside them) still works."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import tiny_models
import torch

REPO = Path(__file__).resolve().parent.parent


def _raw(header: dict, data: bytes = b"", length: int | None = None) -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h) if length is None else length) + h + data


def _good_set_bytes() -> tuple[bytes, dict, dict]:
    """A real small set's file bytes, header and tensors."""
    import tempfile

    from safetensors import safe_open
    from self_cascade.nodes.patch import model_family
    from self_cascade.upsampler.fileformat import save_upsamplers
    from self_cascade.upsampler.modules import UpsamplerSet
    from self_cascade.upsampler.taps import derive_taps, emb_dim

    model = tiny_models.tiny_sd15(0)
    unet = model.get_model_object("diffusion_model")
    uset = UpsamplerSet.create(derive_taps(unet), emb_dim(unet), model_family(model), "light", size=8)
    with tempfile.TemporaryDirectory() as d:
        path = f"{d}/s.safetensors"
        save_upsamplers(path, uset)
        with safe_open(path, "pt") as f:
            meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        return Path(path).read_bytes(), meta, tensors


def hostile_files(folder: Path) -> dict[str, str]:
    """Write the lying files into ``folder``; returns {file name: the words its error must contain}."""
    from safetensors.torch import save_file

    raw, meta, tensors = _good_set_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    key = sorted(tensors)[0]
    huge = dict(header, **{key: {"dtype": "F32", "shape": [1 << 20, 1 << 20], "data_offsets": [0, 4 << 40]}})
    liar = dict(header, **{key: {"dtype": "F32", "shape": [100000, 100000], "data_offsets": [0, 16]}})
    cases = {
        "truncated_data.safetensors": (raw[: len(raw) // 2], "truncated"),
        "truncated_header.safetensors": (raw[: 8 + n // 2], "bad header length"),
        "huge_header_length.safetensors": (struct.pack("<Q", 1 << 62) + raw[8:], "bad header length"),
        "huge_tensor_offsets.safetensors": (_raw(huge, raw[8 + n:]), "truncated"),
        "huge_tensor_shape.safetensors": (_raw(liar, raw[8 + n:]), "claims shape"),
        "not_a_tensor.safetensors": (_raw(dict(header, **{key: {"dtype": "F32"}}), raw[8 + n:]), "not a tensor"),
        "bad_metadata.safetensors": (_raw(dict(header, __metadata__=["x"]), raw[8 + n:]), "__metadata__"),
    }
    for name, (data, _) in cases.items():
        (folder / name).write_bytes(data)
    save_file({k: v.to(torch.int32) if k == key else v for k, v in tensors.items()},
              str(folder / "int_weights.safetensors"), metadata=meta)
    out = {name: words for name, (_, words) in cases.items()}
    out["int_weights.safetensors"] = "dtype torch.int32"
    return out


def test_lying_safetensors_are_clear_errors(pack, tmp_path):
    from self_cascade.upsampler.fileformat import UpsamplerFileError, load_upsamplers

    for name, words in hostile_files(tmp_path).items():
        with pytest.raises(UpsamplerFileError) as info:
            load_upsamplers(str(tmp_path / name))
        assert name in str(info.value) and words in str(info.value), (name, str(info.value))


def _official_with(dtype_of: dict) -> dict:
    from test_convert import synthetic_official

    sd = synthetic_official(random_first=False)
    return {k: v.to(dtype_of.get(k, v.dtype)) for k, v in sd.items()}


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool, torch.complex64])
def test_official_pth_with_wrong_dtypes_is_refused_before_copying(pack, tmp_path, dtype):
    """Right keys and shapes, wrong dtype (the last key, so every other tensor was accepted first):
    refused naming the tensor and its dtype; nothing beside the .pth."""
    from self_cascade.upsampler.convert import load_official_pth

    sd = _official_with({})
    last = sorted(sd)[-1]
    sd[last] = torch.zeros(sd[last].shape, dtype=dtype)
    pth = tmp_path / "upsampler_only.pth"
    torch.save(sd, pth)
    with pytest.raises(ValueError, match=f"{last}.*dtype {dtype}".replace("(", r"\(").replace(")", r"\)")):
        load_official_pth(str(pth))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["upsampler_only.pth"]


def test_loader_list_and_a_good_file_survive_the_liars(pack, model_folder):
    """The Upsampler Loader's options still list every file and the good one loads; each liar is a
    SelfCascadeError naming it."""
    from self_cascade.nodes.common import SelfCascadeError
    from self_cascade.nodes.upsamplers import SelfCascadeUpsamplerLoader

    names = hostile_files(model_folder)
    raw, _, _ = _good_set_bytes()
    (model_folder / "good.safetensors").write_bytes(raw)
    torch.save({"unet.feature_upsampler0.0.in_layers.0.weight": torch.zeros(320, dtype=torch.int64)},
               model_folder / "partial.pth")
    schema = SelfCascadeUpsamplerLoader.define_schema()
    options = schema.inputs[0].options
    assert set(names) | {"good.safetensors", "partial.pth"} <= set(options), options
    assert SelfCascadeUpsamplerLoader.execute("good.safetensors").result[0] is not None
    for name in [*names, "partial.pth"]:
        with pytest.raises(SelfCascadeError, match=name.replace(".", r"\.")):
            SelfCascadeUpsamplerLoader.execute(name)


_PROBE = r"""
import json, resource, sys
import hostenv
hostenv.prepare_in_process()
hostenv.load_pack()
import torch
from self_cascade.upsampler.fileformat import UpsamplerFileError, load_upsamplers
folder = sys.argv[1]
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for name in json.loads(sys.argv[2]):
    try:
        load_upsamplers(folder + "/" + name)
    except UpsamplerFileError:
        pass
    else:
        raise SystemExit(name + " loaded")
print(json.dumps({"grew_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before}))
"""


def test_lying_files_allocate_nothing_large(pack, tmp_path):
    """In a fresh process (so an earlier test's peak cannot hide it): loading every liar raises the
    peak resident memory by less than 64 MiB (the claims go up to 4 TiB)."""
    names = hostile_files(tmp_path)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "dev"), str(REPO / "tests"),
                                                      os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path), json.dumps(list(names))],
                          capture_output=True, text=True, timeout=300, cwd=str(REPO), env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    grew = json.loads(proc.stdout.strip().splitlines()[-1])["grew_kib"]
    assert grew < 64 * 1024, f"peak memory grew by {grew / 1024:.0f} MiB"
