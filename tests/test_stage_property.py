"""Property-based (hypothesis): every stage plan and every StageSettings size combination that the
checks accept yields the sizes planned; everything else is refused with a SelfCascadeError.
Deterministic (derandomized) and a few hundred examples each, so the suite stays fast."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

FAST = settings(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
mult8 = st.integers(1, 160).map(lambda n: n * 8)


@pytest.fixture(scope="module")
def model(pack):
    import tiny_models

    return tiny_models.tiny_sd15(0)


@FAST
@given(base=st.tuples(mult8, mult8), grow=st.tuples(st.integers(0, 600), st.integers(0, 600)))
def test_every_plan_ends_at_the_target_in_4x_steps(pack, base, grow):
    from self_cascade.upsampler.stages import num_stages, plan_stages

    target = (base[0] + 8 * grow[0], base[1] + 8 * grow[1])
    sizes = plan_stages(base, target)
    ratio = target[0] * target[1] / (base[0] * base[1])
    assert len(sizes) == (0 if ratio <= 1 else math.ceil(math.log(ratio, 4) - 1e-9))
    assert len(sizes) == num_stages(base[0] * base[1], target[0] * target[1])
    if not sizes:
        return
    assert sizes[-1] == target
    prev = base
    for w, h in sizes:
        assert w % 8 == 0 and h % 8 == 0, sizes
        assert prev[0] <= w <= target[0] and prev[1] <= h <= target[1], (prev, sizes)
        # at most 4x the pixels, up to the previous stage's rounding down to 8 px
        assert w * h <= 4 * (prev[0] + 8) * (prev[1] + 8), f"a stage far above 4x the pixels: {prev} -> {(w, h)}"
        prev = (w, h)
    for (w0, h0), (w1, h1) in zip([base, *sizes][: len(sizes) - 1], sizes[:-1], strict=True):  # full stages: 4x, minus the rounding down
        assert (w1 + 8) * (h1 + 8) > 4 * w0 * h0 * 0.999, (base, target, sizes)


def _accepts(model, h, w, s):
    from self_cascade.nodes.checks import validate_stage
    from self_cascade.nodes.common import SelfCascadeError

    try:
        _, size = validate_stage(model, {"samples": torch.zeros(1, 4, h, w)}, s, tuned=False)
    except SelfCascadeError:
        return None
    return size


@FAST
@given(h=st.integers(1, 40), w=st.integers(1, 40),
       scale=st.one_of(st.floats(-2, 9, allow_nan=False), st.sampled_from([float("nan"), float("inf"), 1.0, 2.0])),
       width=st.one_of(st.just(0), st.integers(-16, 400)), height=st.one_of(st.just(0), st.integers(-16, 400)))
def test_stage_settings_size_is_what_was_asked(model, h, w, scale, width, height):
    """Explicit width/height (both set, multiples of 8, not smaller) -> exactly that; else scale >= 1
    -> each side times scale to the nearest cell; anything else is refused."""
    from self_cascade.nodes.cascade import StageSettings

    size = _accepts(model, h, w, StageSettings(scale=scale, width=width, height=height, steps=4))
    if width or height:
        ok = width > 0 and height > 0 and width % 8 == 0 and height % 8 == 0 and height >= 8 * h and width >= 8 * w
        assert (size is not None) == ok, (h, w, width, height, size)
        if ok:
            assert size == (height // 8, width // 8)
    else:
        ok = math.isfinite(scale) and scale >= 1.0
        assert (size is not None) == ok, (h, w, scale, size)
        if ok:
            assert abs(size[0] - h * scale) <= 0.5 and abs(size[1] - w * scale) <= 0.5 and size >= (h, w)


@FAST
@given(base=st.tuples(st.integers(1, 24), st.integers(1, 24)), grow=st.tuples(st.integers(0, 90), st.integers(0, 90)))
def test_the_plans_sizes_are_accepted_stage_by_stage(model, base, grow):
    """Each planned stage, given as the Stage's width/height on the previous stage's latent, is accepted
    and yields exactly its planned size (what Upscale does stage by stage)."""
    from self_cascade.nodes.cascade import StageSettings
    from self_cascade.upsampler.stages import plan_stages

    bh, bw = base
    target = (8 * (bw + grow[0]), 8 * (bh + grow[1]))
    h, w = bh, bw
    for pw, ph in plan_stages((8 * bw, 8 * bh), target):
        assert _accepts(model, h, w, StageSettings(width=pw, height=ph, steps=4)) == (ph // 8, pw // 8)
        h, w = ph // 8, pw // 8
    assert (8 * w, 8 * h) == target
