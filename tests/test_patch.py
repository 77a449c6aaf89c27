"""The tuned patch (nodes/patch.py) on tiny real SD1-style and SDXL-style ComfyUI models.

The expectation of acceptance (1) is computed independently of the patch: the unpatched model's
own features of the pivot are captured with a plain capturing patch, nearest-upsampled, and added
with plain ComfyUI block patches in a second unpatched run.
"""
from __future__ import annotations

import pytest
import tiny_models
import torch
import torch.nn.functional as F


@pytest.fixture(scope="module")
def mods(pack):
    from self_cascade.nodes import patch
    from self_cascade.upsampler import modules, taps

    return patch, modules, taps


def plain_set(model, mods, variant="official"):
    patch, modules, taps = mods
    unet = model.get_model_object("diffusion_model")
    return modules.UpsamplerSet.create(taps.derive_taps(unet), taps.emb_dim(unet), patch.model_family(model), variant)


def fresh_set(model, mods, variant="official"):
    """A fresh set as the nodes pass it on: its ModelPatcher (``.model`` is the set the wrapper calls)."""
    from self_cascade.nodes.managed import upsampler_patcher

    return upsampler_patcher(plain_set(model, mods, variant))


def run_unet(model, x, t, context, y=None, opts=None, n_chunks=1):
    """The diffusion model call as ComfyUI makes it, with the patcher's wrappers in transformer_options."""
    import comfy.patcher_extension

    to = comfy.patcher_extension.copy_nested_dicts(model.model_options.get("transformer_options", {}))
    if opts:
        for k, v in opts.items():
            to.setdefault("patches", {}).setdefault(k, []).extend(v)
    to["cond_or_uncond"] = list(range(n_chunks))
    comfy.patcher_extension.merge_nested_dicts(to.setdefault("wrappers", {}), model.wrappers, copy_dict1=False)
    unet = model.get_model_object("diffusion_model")
    with torch.no_grad():
        return unet(x, timesteps=t, context=context, y=y, transformer_options=to)


def inputs(sdxl: bool, batch: int, h: int, w: int, t: float = 500.0, n_chunks: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = batch * n_chunks
    x = torch.randn(n, 4, h, w, generator=g)
    ctx = torch.randn(n, 8, tiny_models.CONTEXT_DIM, generator=g)
    y = torch.randn(n, 2816, generator=g) if sdxl else None
    pivot = torch.randn(batch, 4, (h + 1) // 2, (w + 1) // 2, generator=g)
    return x, torch.full((n,), t), ctx, y, pivot


def expected_output(model, uset, x, t, ctx, y, pivot, strength, n_chunks=1):
    """Independent maths: capture the frozen model's pivot features, nearest x2, add them."""
    taps = uset.model.taps
    scaled = model.model.process_latent_in(pivot).repeat(n_chunks, 1, 1, 1)
    got = {}

    def cap_in(h, o):
        got[o["block"]] = h.clone()
        return h

    def cap_mid(h, hsp, o):
        if o["block"] == ("output", 0):
            got[("middle", 0)] = h.clone()
        return h, hsp

    run_unet(model, scaled, t, ctx, y, {"input_block_patch_after_skip": [cap_in], "output_block_patch": [cap_mid]})
    adds = {tp.block: strength * F.interpolate(got[tp.block], scale_factor=2.0, mode="nearest") for tp in taps}

    def add_in(h, o):
        a = adds.get(o["block"])
        return h + a if a is not None else h

    def add_mid(h, hsp, o):
        if o["block"] == ("output", 0):
            h = h + adds[("middle", 0)]
        return h, hsp

    return run_unet(model, x, t, ctx, y, {"input_block_patch_after_skip": [add_in], "output_block_patch": [add_mid]})


BUILDERS = {"sd15": tiny_models.tiny_sd15, "sd21v": tiny_models.tiny_sd21v, "sdxl": tiny_models.tiny_sdxl}


@pytest.mark.parametrize("family", ["sd15", "sd21v", "sdxl"])
@pytest.mark.parametrize("batch,n_chunks", [(1, 1), (2, 2)])
def test_fresh_set_adds_exactly_the_upsampled_pivot_features(mods, family, batch, n_chunks):
    patch, _, _ = mods
    model = BUILDERS[family](0)
    uset = fresh_set(model, mods)
    x, t, ctx, y, pivot = inputs(family == "sdxl", batch, 8, 12, n_chunks=n_chunks)
    plain = run_unet(model, x, t, ctx, y, n_chunks=n_chunks)
    patched = run_unet(patch.apply_upsamplers(model, uset, pivot, 1.5, 100.0), x, t, ctx, y, n_chunks=n_chunks)
    want = expected_output(model, uset, x, t, ctx, y, pivot, 1.5, n_chunks)
    assert (patched - plain).abs().max() > 1e-3  # the patch does something
    torch.testing.assert_close(patched, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_strength_zero_and_end_timestep_are_bit_identical(mods, family):
    patch, _, _ = mods
    model = tiny_models.tiny_sdxl(0) if family == "sdxl" else tiny_models.tiny_sd15(0)
    uset = fresh_set(model, mods)
    x, t, ctx, y, pivot = inputs(family == "sdxl", 1, 8, 8)
    plain = run_unet(model, x, t, ctx, y)
    assert torch.equal(run_unet(patch.apply_upsamplers(model, uset, pivot, 0.0, 100.0), x, t, ctx, y), plain)
    off = patch.apply_upsamplers(model, uset, pivot, 1.0, 500.0)  # t == end: off (strict >), no crash
    assert torch.equal(run_unet(off, x, t, ctx, y), plain)
    x2, t2, ctx2, y2, _ = inputs(family == "sdxl", 1, 8, 8, t=100.0)
    assert torch.equal(run_unet(patch.apply_upsamplers(model, uset, pivot, 1.0, 100.0), x2, t2, ctx2, y2),
                       run_unet(model, x2, t2, ctx2, y2))
    on = run_unet(patch.apply_upsamplers(model, uset, pivot, 1.0, 499.0), x, t, ctx, y)
    assert not torch.equal(on, plain)


def test_clone_never_mutates_input_and_twice_replaces(mods):
    import comfy.patcher_extension

    patch, _, _ = mods
    model = tiny_models.tiny_sd15(0)
    uset = fresh_set(model, mods)
    x, t, ctx, y, pivot = inputs(False, 1, 8, 8)
    kind = comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL
    once = patch.apply_upsamplers(model, uset, pivot, 1.0, 100.0)
    assert model.get_wrappers(kind, "self_cascade") == []
    twice = patch.apply_upsamplers(once, uset, pivot, 0.5, 100.0)
    assert len(twice.get_wrappers(kind, "self_cascade")) == 1
    direct = patch.apply_upsamplers(model, uset, pivot, 0.5, 100.0)
    assert torch.equal(run_unet(twice, x, t, ctx, y), run_unet(direct, x, t, ctx, y))


@pytest.mark.parametrize("family,expected", [
    ("sd15", [(("input", 2), 32, 2), (("input", 3), 64, 2), (("middle", 0), 64, 2)]),
    ("sdxl", [(("input", 2), 32, 2), (("input", 3), 64, 2), (("middle", 0), 64, 2)]),
])
def test_called_at_taps_with_right_shapes(mods, family, expected):
    """Odd non-square size, batch 2, CFG chunks: every tap is hit once per call with h's shape."""
    patch, modules, _ = mods
    model = tiny_models.tiny_sdxl(0) if family == "sdxl" else tiny_models.tiny_sd15(0)
    uset = fresh_set(model, mods)
    assert [(tp.block, tp.channels, tp.downscale) for tp in uset.model.taps] == expected
    seen = []
    for i, up in enumerate(uset.model.ups):
        up.register_forward_hook(lambda m, a, out, i=i: seen.append((uset.model.taps[i].block, tuple(a[0].shape),
                                                                      tuple(a[1].shape), tuple(out.shape))))
    x, t, ctx, y, pivot = inputs(family == "sdxl", 2, 9, 14, n_chunks=2)
    run_unet(patch.apply_upsamplers(model, uset, pivot, 1.0, 100.0), x, t, ctx, y, n_chunks=2)
    # x 9x14 -> pivot 5x7 -> taps /2: 3x4 -> x2 6x8 (fitted to h's 5x7 by the patch)
    assert [s[0] for s in seen] == [tp.block for tp in uset.model.taps]
    for block, fin, emb, out in seen:
        ch = dict((b, c) for b, c, _ in expected)[block]
        assert fin == (4, ch, 3, 4) and emb == (4, 128) and out == (4, ch, 6, 8)


def sample(model, h=8, w=12, cfg=4.0, batch=1, steps=3, seed=0, sdxl=False):
    """A short real sampling run through comfy.sample.sample (KSampler's path)."""
    import comfy.sample

    noise = torch.randn(batch, 4, h, w, generator=torch.Generator().manual_seed(seed))
    return comfy.sample.sample(model, noise, steps, cfg, "euler", "normal", tiny_models.conditioning(1, pooled=sdxl),
                               tiny_models.conditioning(2, pooled=sdxl), torch.zeros_like(noise), denoise=1.0,
                               disable_pbar=True, seed=seed)


def record_calls(uset):
    calls = []
    for i, up in enumerate(uset.model.ups):
        up.register_forward_hook(lambda m, a, out, i=i: calls.append((i, tuple(a[0].shape))))
    return calls


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
@pytest.mark.parametrize("cfg", [1.0, 4.0])
def test_real_sampling_cfg_on_and_off_batch_and_non_square(mods, family, cfg):
    """cfg 1: ComfyUI runs cond only; cfg 4: cond+uncond batched -> the pivot is repeated per chunk."""
    patch, _, _ = mods
    sdxl = family == "sdxl"
    model = tiny_models.tiny_sdxl(0) if sdxl else tiny_models.tiny_sd15(0)
    uset = fresh_set(model, mods, "light")
    calls = record_calls(uset)
    pivot = torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(2))  # batch 2, 6x10 -> 3x5
    out = sample(patch.apply_upsamplers(model, uset, pivot, 1.0, 100.0), 6, 10, cfg, batch=2, sdxl=sdxl)
    assert out.shape == (2, 4, 6, 10) and torch.isfinite(out).all()
    chunks = 1 if cfg == 1.0 else 2
    # euler/normal 3 steps on a 1000-step eps model: timesteps 999, ~500 (> 100) and ~0 (off). The set
    # runs at every step (the gate is applied on the device, test_wrapper_reads_nothing_back_...)
    assert len(calls) == 3 * len(uset.model.taps)
    # pivot 3x5 at tap /2: 2x3 (the tiny UNet's taps are all at /2), batch 2 per cond/uncond chunk
    assert all(shape[0] == 2 * chunks and shape[-2:] == (2, 3) for _, shape in calls)
    assert not torch.equal(out, sample(model, 6, 10, cfg, batch=2, sdxl=sdxl))


def _freeu(model):
    from comfy_extras.nodes_freelunch import FreeU_V2

    return FreeU_V2().patch(model, 1.3, 1.4, 0.9, 0.2)[0]


def _deep_shrink(after_skip: bool):
    def apply(model):
        from comfy_extras.nodes_model_downscale import PatchModelAddDownscale

        return PatchModelAddDownscale.execute(model, 3, 2.0, 0.0, 1.0, after_skip, "bicubic", "bicubic").result[0]
    return apply


@pytest.fixture(scope="module")
def plain_sample():
    return sample(tiny_models.tiny_sd15(0))


@pytest.mark.parametrize("other", ["freeu_v2", "deep_shrink_after_skip", "deep_shrink_before_skip"])
def test_composes_with_freeu_and_deep_shrink(mods, plain_sample, other):
    """Ours applied before and after the other patch: sampling runs, finite, both patches active."""
    patch, _, _ = mods
    apply_other = {"freeu_v2": _freeu, "deep_shrink_after_skip": _deep_shrink(True),
                   "deep_shrink_before_skip": _deep_shrink(False)}[other]
    model = tiny_models.tiny_sd15(0)
    uset = fresh_set(model, mods)
    calls = record_calls(uset)
    pivot = torch.randn(1, 4, 4, 6, generator=torch.Generator().manual_seed(2))
    only_other = sample(apply_other(model))
    assert not torch.equal(only_other, plain_sample)  # the other patch is active
    for ours_first in (True, False):
        calls.clear()
        ours = lambda m: patch.apply_upsamplers(m, uset, pivot, 1.0, 100.0)  # noqa: E731
        out = sample(apply_other(ours(model)) if ours_first else ours(apply_other(model)))
        assert torch.isfinite(out).all() and len(calls) == 3 * len(uset.model.taps), ours_first  # ours still active
        assert not torch.equal(out, only_other)


def test_training_patch_trains_through_the_wrapper_and_pivot_can_be_swapped(mods):
    """The training node's use: gradients reach only the upsamplers; assigning .pivot changes the features."""
    import comfy.patcher_extension

    patch, _, _ = mods
    model = tiny_models.tiny_sd15(0)
    uset = plain_set(model, mods, "light")
    x, t, ctx, y, pivot = inputs(False, 1, 8, 8)
    inj = patch.TrainingPatch(uset, pivot, 1.0, 100.0)
    patched = inj.install(model)
    unet = model.get_model_object("diffusion_model")
    to = {"cond_or_uncond": [0], "wrappers": comfy.patcher_extension.copy_nested_dicts(patched.wrappers)}
    seen = []
    uset.ups[0].register_forward_hook(lambda m, a, o: seen.append((a[0].requires_grad, a[1].requires_grad, o.requires_grad)))
    with torch.inference_mode(False), torch.enable_grad():
        out = unet(x, timesteps=t, context=ctx, transformer_options=dict(to))
        out.square().mean().backward()
    grads = {n: p.grad for n, p in uset.named_parameters()}
    assert all(g is not None for g in grads.values())
    assert any(g.abs().sum() > 0 for n, g in grads.items() if "proj_out" in n)  # the zero-init output layer learns
    assert seen == [(False, False, True)]  # pivot features and emb come from the no_grad frozen pass
    with torch.no_grad():
        for p in uset.parameters():
            p.add_(0.01 * torch.randn_like(p))
        first = unet(x, timesteps=t, context=ctx, transformer_options=dict(to))
        inj.pivot = pivot + 1.0
        second = unet(x, timesteps=t, context=ctx, transformer_options=dict(to))
    assert not torch.equal(first, second)


def test_pivot_batch_that_does_not_fit_cfg_is_an_error_not_a_mispairing(mods):
    """A batch-2 pivot with a batch-1 sample under CFG (x holds cond + uncond = 2 rows) used to pass the
    ``b == n`` check and pair cond with pivot 0, uncond with pivot 1. Through the Apply node's pivot input
    it must now stop with an error that names both batch sizes; fitting batches still sample."""
    from self_cascade.nodes.common import SelfCascadeError
    from self_cascade.nodes.upsamplers import SelfCascadeApplyUpsamplers

    model = tiny_models.tiny_sd15(0)
    uset = fresh_set(model, mods, "light")
    pivot2 = {"samples": torch.randn(2, 4, 4, 6, generator=torch.Generator().manual_seed(2))}
    patched = SelfCascadeApplyUpsamplers.execute(model, uset, pivot2, 1.0, 100.0).result[0]
    with pytest.raises(SelfCascadeError, match=r"pivot batch 2 does not fit the sampled batch 1"):
        sample(patched, 8, 12, cfg=4.0, batch=1)
    out = sample(patched, 8, 12, cfg=4.0, batch=2)  # the same pivot with a fitting batch still samples
    assert out.shape == (2, 4, 8, 12) and torch.isfinite(out).all()
    # the 2-row pivot is repeated once per cond/uncond chunk: 4 rows reach every upsampler
    calls = record_calls(uset)
    sample(patched, 8, 12, cfg=4.0, batch=2)
    assert all(shape[0] == 4 for _, shape in calls)


class SyncCounter(torch.overrides.TorchFunctionMode):
    """Counts the tensor methods that read a value back to the host (a device->host sync on a GPU and a
    break in a CUDA graph capture). It runs on the CPU, so it counts calls rather than timing them."""

    READS = {"__bool__", "item", "tolist", "nonzero", "__int__", "__float__", "__index__", "numpy"}

    def __init__(self):
        super().__init__()
        self.reads = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.reads += getattr(func, "__name__", "") in self.READS
        return func(*args, **(kwargs or {}))


def count_reads(model, *args) -> tuple[int, torch.Tensor]:
    with SyncCounter() as counter:
        out = run_unet(model, *args)
    return counter.reads, out


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_wrapper_reads_nothing_back_and_gates_each_row_on_the_device(mods, family):
    """The per-call wrapper adds no host read to the UNet's own (so it can be captured), whether the gate
    is all-on, all-off or mixed; a mixed batch keeps its off rows bit-identical to the plain model and its
    on rows bit-identical to an all-on run."""
    patch, _, _ = mods
    sdxl = family == "sdxl"
    model = BUILDERS[family](0)
    uset = fresh_set(model, mods)
    x, _, ctx, y, pivot = inputs(sdxl, 3, 8, 8)
    t = torch.tensor([900.0, 50.0, 400.0])  # end 100: rows 0 and 2 on, row 1 off
    plain_reads, plain = count_reads(model, x, t, ctx, y)
    for end, want_on in ((100.0, [True, False, True]), (950.0, [False] * 3), (10.0, [True] * 3)):
        reads, out = count_reads(patch.apply_upsamplers(model, uset, pivot, 1.5, end), x, t, ctx, y)
        assert reads == plain_reads, end
        _, all_on = count_reads(patch.apply_upsamplers(model, uset, pivot, 1.5, -1.0), x, t, ctx, y)
        for row, on in enumerate(want_on):
            assert torch.equal(out[row], all_on[row] if on else plain[row]), (end, row)
            assert not torch.equal(all_on[row], plain[row])
