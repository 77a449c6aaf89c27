"""Scale decomposition (R = ceil(log4(target/base)) stages, each <= 4x pixels) and its utility node."""
from __future__ import annotations

import math

import pytest


@pytest.mark.parametrize("base,target,want", [
    ((512, 768), (2048, 3072), [(1024, 1536), (2048, 3072)]),
    ((512, 512), (1536, 1536), [(1024, 1024), (1536, 1536)]),  # two stages of unequal scale: x2 then x1.5
    ((512, 512), (4096, 4096), [(1024, 1024), (2048, 2048), (4096, 4096)]),
    ((1024, 1024), (2048, 2048), [(2048, 2048)]),
    ((512, 512), (512, 512), []),
    ((512, 512), (520, 512), [(520, 512)]),
])
def test_plan_examples(pack, base, target, want):
    from self_cascade.upsampler.stages import plan_stages

    assert plan_stages(base, target) == want


@pytest.mark.parametrize("base,target", [((512, 512), (1024, 2048)), ((1024, 1024), (3008, 2000)),
                                         ((512, 768), (4000, 1200)), ((64, 64), (1000, 1000))])
def test_plan_properties(pack, base, target):
    """R stages, sizes multiples of 8 and non-decreasing, each stage <= 4x pixels (rounding aside)."""
    from self_cascade.upsampler.stages import plan_stages

    if target[0] % 8 or target[1] % 8:
        with pytest.raises(ValueError, match="multiple of 8"):
            plan_stages(base, target)
        return
    sizes = plan_stages(base, target)
    assert len(sizes) == math.ceil(math.log(target[0] * target[1] / (base[0] * base[1]), 4) - 1e-9)
    assert sizes[-1] == target
    prev = base
    for w, h in sizes:
        assert w % 8 == 0 and h % 8 == 0 and w >= prev[0] and h >= prev[1]
        assert w * h <= 4 * prev[0] * prev[1] * 1.05
        prev = (w, h)


@pytest.mark.parametrize("base,target,match", [((500, 512), (1024, 1024), "multiple of 8"),
                                                ((512, 512), (256, 1024), "smaller than the base")])
def test_plan_rejects(pack, base, target, match):
    from self_cascade.upsampler.stages import plan_stages

    with pytest.raises(ValueError, match=match):
        plan_stages(base, target)


def test_plan_node(pack):
    from self_cascade.nodes.common import SelfCascadeError
    from self_cascade.nodes.stage import SelfCascadeStagePlan

    out = SelfCascadeStagePlan.execute(512, 512, 1536, 1536).result
    assert out[1:] == (2, 1024, 1024)
    assert out[0].startswith("512x512 -> 1024x1024 (x2.00 by x2.00) -> 1536x1536 (x1.50 by x1.50)")
    assert SelfCascadeStagePlan.define_schema().category == "sampling/self_cascade/utils"
    with pytest.raises(SelfCascadeError, match="multiple of 8"):
        SelfCascadeStagePlan.execute(500, 512, 1024, 1024)


def test_plan_node_reports_the_auto_k_of_a_connected_model(pack):
    """With a model connected the plan names the K that K_mode auto uses on it (same sizes and outputs)."""
    import tiny_models
    from self_cascade.nodes.stage import SelfCascadeStagePlan

    plain = SelfCascadeStagePlan.execute(512, 512, 1536, 1536).result
    assert "K_mode auto" not in plain[0]
    flow = SelfCascadeStagePlan.execute(512, 512, 1536, 1536, model=tiny_models.tiny_flow(seed=0)).result
    assert flow[1:] == plain[1:] and flow[0].startswith(plain[0])
    assert flow[0].endswith("; K_mode auto: K 700 -> 525.7 on this model"), flow[0]
    sd = SelfCascadeStagePlan.execute(512, 512, 1536, 1536, model=tiny_models.tiny_sd15(seed=0), K=600.0).result
    assert sd[0].endswith("; K_mode auto: K 600 -> 600 on this model"), sd[0]
