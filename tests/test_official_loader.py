"""The Upsampler Loader with official ``.pth`` weights: listed, converted once (weights-only) and
cached beside the file, refused on an SD1.5 model, accepted by an SDXL-shaped one; a file that the
weights-only load refuses names the object and the converter's explicit opt-in, which then works.

The official file is synthetic (test_convert.synthetic_official: the official key layout and SDXL
shapes, stride-0 tensors) wrapped in the Lightning layout the official code reads
(``torch.load(path)['state_dict']``, next to epoch/optimizer entries).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tiny_models
import torch
from test_convert import synthetic_official

REPO = Path(__file__).resolve().parent.parent
PTH = "upsampler_only.pth"
CACHE = "upsampler_only.converted.safetensors"


def lightning_style(sd: dict, **extra) -> dict:
    """What a PyTorch Lightning checkpoint holds besides the weights (all weights-only-safe types)."""
    return {"epoch": 3, "global_step": 1200, "pytorch-lightning_version": "1.4.2",
            "state_dict": dict(sd, **{"unet.conv_in.weight": torch.zeros(2)}),  # the frozen UNet's keys too
            "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 1e-5, "params": [0]}]}],
            "lr_schedulers": [], "callbacks": {}, **extra}


def all_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def sdxl_shaped_on_meta():
    """A full-size SDXL UNet (ComfyUI's SDXL config class) on the meta device: real module structure,
    no memory. The patch's compatibility check reads only the structure, so no weights are needed."""
    import comfy.model_patcher
    import comfy.supported_models

    cfg = dict(use_checkpoint=False, image_size=32, in_channels=4, out_channels=4, model_channels=320,
               num_res_blocks=[2, 2, 2], channel_mult=[1, 2, 4], transformer_depth=[0, 0, 2, 2, 10, 10],
               transformer_depth_middle=10, transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10],
               use_spatial_transformer=True, legacy=False, num_classes="sequential", adm_in_channels=2816,
               use_linear_in_transformer=True, context_dim=2048, num_head_channels=64,
               use_temporal_attention=False, use_temporal_resblock=False)
    model = comfy.supported_models.SDXL(cfg).get_model({}, device="meta")
    return comfy.model_patcher.ModelPatcher(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def test_official_pth_listed_converted_once_cached_and_checked_against_models(model_folder, monkeypatch):
    from self_cascade.nodes.common import SelfCascadeError
    from self_cascade.nodes.upsamplers import SelfCascadeApplyUpsamplers, SelfCascadeUpsamplerLoader
    from self_cascade.upsampler import convert
    from self_cascade.upsampler.fileformat import read_info

    sd = synthetic_official(random_first=False)
    torch.save(lightning_style(sd), model_folder / PTH)
    outside = all_files(model_folder.parent.parent)
    assert PTH in SelfCascadeUpsamplerLoader.define_schema().inputs[0].options

    managed = SelfCascadeUpsamplerLoader.execute(PTH).result[0]  # the set's ModelPatcher
    uset = managed.model
    assert (model_folder / CACHE).is_file()
    assert all_files(model_folder) == {PTH, CACHE}, "a temporary file was left behind"
    assert all_files(model_folder.parent.parent) == outside | {f"models/self_cascade/{CACHE}"}
    assert uset.info.family == "SDXL" and uset.num_params() == 145_457_280
    key = "unet.feature_upsampler3.1.out_layers.3.bias"
    assert torch.equal(uset.state_dict()["ups.3.blocks.1.out_layers.3.bias"], sd[key])
    options = SelfCascadeUpsamplerLoader.define_schema().inputs[0].options
    assert PTH in options and CACHE not in options, "the cache is shown as a second entry"

    # second load: from the cache; converting again would fail here
    def no_conversion(*a, **k):
        raise AssertionError("converted again although the cache is current")

    monkeypatch.setattr(convert, "load_official_pth", no_conversion)
    stamp = (model_folder / CACHE).stat().st_mtime_ns
    again = SelfCascadeUpsamplerLoader.execute(PTH).result[0].model
    assert torch.equal(again.state_dict()["ups.3.blocks.1.out_layers.3.bias"], sd[key])
    assert (model_folder / CACHE).stat().st_mtime_ns == stamp
    # a replaced .pth (other mtime) is converted again
    st = (model_folder / PTH).stat()
    os.utime(model_folder / PTH, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="converted again"):
        SelfCascadeUpsamplerLoader.execute(PTH)
    monkeypatch.undo()
    SelfCascadeUpsamplerLoader.execute(PTH)
    assert read_info(str(model_folder / CACHE)).extra["source_mtime_ns"] == str(st.st_mtime_ns + 10**9)

    # an SD1.5 model refuses it with a clear message; an SDXL-shaped UNet accepts it
    sd15 = tiny_models.tiny_sd15(0)
    pivot = {"samples": torch.zeros(1, 4, 8, 8)}
    with pytest.raises(SelfCascadeError, match="trained for a SDXL model, but the model is SD15"):
        SelfCascadeApplyUpsamplers.execute(sd15, managed, pivot, 1.0, 100.0)
    sdxl = sdxl_shaped_on_meta()
    patched = SelfCascadeApplyUpsamplers.execute(sdxl, managed, pivot, 1.0, 100.0).result[0]
    assert patched is not sdxl
    injected = patched.wrappers["diffusion_model"]["self_cascade"][0].upsamplers  # the loader's set itself
    assert injected is uset and patched.get_additional_models_with_key("self_cascade") == [managed]
    k = "ups.3.blocks.1.out_layers.3.bias"
    assert torch.equal(injected.state_dict()[k].float().cpu(), uset.state_dict()[k])
    assert "self_cascade" not in sdxl.wrappers.get("diffusion_model", {})


def test_pickle_refused_by_weights_only_gives_the_opt_in_and_the_cli_flag_converts_it(model_folder):
    from self_cascade.nodes.common import SelfCascadeError
    from self_cascade.nodes.upsamplers import SelfCascadeUpsamplerLoader

    sd = synthetic_official(random_first=False)
    # Lightning stores hyper-parameters as objects (AttributeDict, omegaconf...): weights-only refuses them
    torch.save(lightning_style(sd, hyper_parameters=argparse.Namespace(lr=1e-5)), model_folder / PTH)
    with pytest.raises(SelfCascadeError) as err:
        SelfCascadeUpsamplerLoader.execute(PTH)
    msg = str(err.value)
    assert "weights-only" in msg and "argparse.Namespace" in msg, msg
    assert "scripts/convert_official_upsamplers.py --trust-pickle" in msg and str(model_folder / PTH) in msg, msg
    assert all_files(model_folder) == {PTH}

    script = REPO / "scripts" / "convert_official_upsamplers.py"
    run = subprocess.run([sys.executable, str(script), "--trust-pickle", str(model_folder / PTH)],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "WARNING: --trust-pickle" in run.stderr and "arbitrary code" in run.stderr
    assert f"wrote {model_folder / CACHE}" in run.stdout
    uset = SelfCascadeUpsamplerLoader.execute(PTH).result[0].model  # from the cache the CLI wrote
    assert torch.equal(uset.state_dict()["ups.0.blocks.0.in_layers.2.weight"],
                       sd["unet.feature_upsampler0.0.in_layers.2.weight"])
