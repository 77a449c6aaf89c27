"""Pure-torch upsampler modules and the tap rule, checked on REAL full-size ComfyUI UNet layouts.

The full-size UNets are built on the meta device (no memory) from the configs ComfyUI's
model_detection uses for SD1.5, SD2.1 and SDXL.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

_COMMON = dict(use_checkpoint=False, image_size=32, out_channels=4, in_channels=4, use_spatial_transformer=True,
               legacy=False, model_channels=320, use_temporal_attention=False, use_temporal_resblock=False)
CONFIGS = {
    "SD15": dict(_COMMON, adm_in_channels=None, num_res_blocks=[2, 2, 2, 2], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
                 channel_mult=[1, 2, 4, 4], transformer_depth_middle=1, use_linear_in_transformer=False,
                 context_dim=768, num_heads=8, transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]),
    "SD21": dict(_COMMON, adm_in_channels=None, num_res_blocks=[2, 2, 2, 2], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
                 channel_mult=[1, 2, 4, 4], transformer_depth_middle=1, use_linear_in_transformer=True,
                 context_dim=1024, num_head_channels=64, transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0]),
    "SDXL": dict(_COMMON, num_classes="sequential", adm_in_channels=2816, num_res_blocks=[2, 2, 2],
                 transformer_depth=[0, 0, 2, 2, 10, 10], channel_mult=[1, 2, 4], transformer_depth_middle=10,
                 use_linear_in_transformer=True, context_dim=2048, num_head_channels=64,
                 transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10]),
}
EXPECTED = {
    "SD15": [(("input", 3), 320, 2), (("input", 6), 640, 4), (("input", 9), 1280, 8), (("middle", 0), 1280, 8)],
    "SD21": [(("input", 3), 320, 2), (("input", 6), 640, 4), (("input", 9), 1280, 8), (("middle", 0), 1280, 8)],
    "SDXL": [(("input", 3), 320, 2), (("input", 6), 640, 4), (("input", 8), 1280, 4), (("middle", 0), 1280, 4)],
}


@pytest.fixture(scope="module")
def mods(pack):
    from self_cascade.upsampler import convert, modules, taps

    return modules, taps, convert


def meta_unet(name):
    import comfy.ops
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    return UNetModel(**CONFIGS[name], device="meta", operations=comfy.ops.disable_weight_init)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_taps_of_real_full_size_unets(mods, name):
    modules, taps, convert = mods
    unet = meta_unet(name)
    got = taps.derive_taps(unet)
    assert [(t.block, t.channels, t.downscale) for t in got] == EXPECTED[name]
    assert taps.emb_dim(unet) == 1280
    if name == "SDXL":
        assert got == convert.SDXL_TAPS  # the converter's hard-coded official taps agree with the rule
    # the channels are really those of the block outputs (meta tensors; attention keeps the shape
    # and needs a real device for its memory query, so it is skipped here)
    emb = torch.empty(1, 1280, device="meta")

    def run(block, h):
        for layer in block:
            if "Transformer" not in type(layer).__name__:
                h = layer(h, emb) if "ResBlock" in type(layer).__name__ else layer(h)
        return h

    h = torch.empty(1, 4, 64, 64, device="meta")
    shapes = {}
    for i, block in enumerate(unet.input_blocks):
        h = run(block, h)
        shapes[("input", i)] = tuple(h.shape)
    shapes[("middle", 0)] = tuple(run(unet.middle_block, h).shape)
    for t in got:
        assert shapes[t.block] == (1, t.channels, 64 // t.downscale, 64 // t.downscale)


def test_not_a_unet_is_refused(mods):
    _, taps, _ = mods
    with pytest.raises(taps.NotAUNetError, match="Linear"):
        taps.derive_taps(torch.nn.Linear(2, 2))


@pytest.mark.parametrize("variant", ["official", "light"])
def test_fresh_upsampler_is_exactly_nearest_x2(mods, variant):
    modules, taps, _ = mods
    tps = [taps.Tap(("input", 2), 32, 2), taps.Tap(("middle", 0), 64, 2)]
    uset = modules.UpsamplerSet.create(tps, 128, "SD15", variant)
    g = torch.Generator().manual_seed(1)
    for i, tp in enumerate(tps):
        x = torch.randn(2, tp.channels, 3, 5, generator=g)
        emb = torch.randn(2, 128, generator=g)
        assert torch.equal(uset(i, x, emb), F.interpolate(x, scale_factor=2.0, mode="nearest"))
    # after one optimiser step it is no longer the identity, and the emb matters (time-aware)
    # (64 channels: 2 per GroupNorm group, so a per-channel emb bias is not normalised away)
    x, emb = torch.randn(1, 64, 4, 4, generator=g), torch.randn(1, 128, generator=g)
    opt = torch.optim.SGD(uset.parameters(), lr=0.1)
    uset(1, x, emb).square().mean().backward()
    opt.step()
    out = uset(1, x, emb)
    assert not torch.equal(out, F.interpolate(x, scale_factor=2.0, mode="nearest"))
    assert not torch.allclose(out, uset(1, x, emb * 2))


def test_official_block_matches_hand_computed_guided_diffusion_resblock(mods):
    """First ResBlock (up=True) computed by hand from its weights: GN-SiLU-nearest-conv, +emb, GN-SiLU-conv."""
    modules, taps, _ = mods
    torch.manual_seed(0)
    blk = modules.TimeAwareResBlock(32, 64, up=True)
    for p in blk.parameters():
        torch.nn.init.normal_(p, std=0.1)
    x, emb = torch.randn(2, 32, 3, 4), torch.randn(2, 64)
    want = hand_resblock(blk.state_dict(), x, emb, up=True)
    torch.testing.assert_close(blk(x, emb), want)


def hand_resblock(sd: dict, x, emb, up: bool, prefix: str = "", groups: int = 32):
    """The official layout by hand from a state dict (also used by the converter test)."""
    w = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    h = F.silu(F.group_norm(x, groups, w["in_layers.0.weight"], w["in_layers.0.bias"]))
    if up:
        h, x = F.interpolate(h, scale_factor=2.0), F.interpolate(x, scale_factor=2.0)
    h = F.conv2d(h, w["in_layers.2.weight"], w["in_layers.2.bias"], padding=1)
    h = h + F.linear(F.silu(emb), w["emb_layers.1.weight"], w["emb_layers.1.bias"])[:, :, None, None]
    h = F.silu(F.group_norm(h, groups, w["out_layers.0.weight"], w["out_layers.0.bias"]))
    h = F.conv2d(h, w["out_layers.3.weight"], w["out_layers.3.bias"], padding=1)
    return x + h


def test_parameter_counts_official_about_145M_light_about_100x_smaller(mods):
    modules, taps, convert = mods
    for tps in (convert.SDXL_TAPS, [taps.Tap(("input", 3), 320, 2), taps.Tap(("input", 6), 640, 4),
                                    taps.Tap(("input", 9), 1280, 8), taps.Tap(("middle", 0), 1280, 8)]):
        counts = modules.parameter_counts(tps, 1280)
        assert counts["official"] == 145_457_280
        assert 90 <= counts["official"] / counts["light"] <= 120
    assert modules.parameter_counts(convert.SDXL_TAPS, 1280, {"light": 32})["light"] < counts["light"]
