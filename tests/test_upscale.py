"""SelfCascadeUpscale (one node to any size) and Stage's explicit width/height, in-process and on the live server."""
from __future__ import annotations

import pytest
import tiny_models
import torch
from tiny_models import run_stage

SAMPLING = dict(upscale_method="bicubic", seed=11, steps=8, cfg=2.0, sampler_name="euler", scheduler="normal",
                K=700.0)
#: base 32 px wide x 48 px high -> 136 x 80: different factors per side (x4.25, x1.67), two stages.
BASE_LATENT = (1, 4, 6, 4)
TARGET = (136, 80)
PLAN = [(88, 64), (136, 80)]


@pytest.fixture
def cond():
    return tiny_models.conditioning(3)


def _base(seed: int = 0, shape=BASE_LATENT) -> dict:
    return {"samples": torch.randn(shape, generator=torch.Generator().manual_seed(seed))}


def _upscale(model, cond, latent, target=TARGET, upsamplers=None, **over):
    from self_cascade.nodes.cascade import StageSettings
    from self_cascade.nodes.upscale import upscale

    return upscale(model, cond, cond, latent, StageSettings(**{**SAMPLING, **over}), target, upsamplers,
                   disable_pbar=True)


def test_reaches_the_exact_non_square_target_and_equals_the_stage_chain(pack, tiny_model, cond):
    """Two stages (the plan's sizes), final latent exactly 136x80 px; bit-identical to chaining the Stage
    with the plan's width/height and seeds seed, seed+1."""
    base = _base()
    final, stages, plan = _upscale(tiny_model, cond, base)
    assert final["samples"].shape == (1, 4, TARGET[1] // 8, TARGET[0] // 8)
    assert [tuple(s["samples"].shape[-2:]) for s in stages] == [(h // 8, w // 8) for w, h in PLAN]
    assert stages[-1] is final and torch.isfinite(final["samples"]).all()
    assert "32x48 -> 88x64" in plan and "136x80" in plan and "seeds 11, 12" in plan, plan
    chain = base
    for i, (w, h) in enumerate(PLAN):
        chain = run_stage(tiny_model, cond, cond, chain, **{**SAMPLING, "seed": SAMPLING["seed"] + i}, width=w,
                          height=h)
        assert torch.equal(chain["samples"], stages[i]["samples"]), f"stage {i} differs from the Stage chain"
    same_seed_each = run_stage(tiny_model, cond, cond, stages[0], **SAMPLING, width=136, height=80)
    assert not torch.equal(same_seed_each["samples"], final["samples"]), "stage 2 must use seed + 1"


def test_one_stage_target_and_batch_index_kept(pack, tiny_model, cond):
    base = {**_base(shape=(2, 4, 6, 4)), "batch_index": [4, 5]}
    final, stages, _ = _upscale(tiny_model, cond, base, target=(40, 48))
    assert len(stages) == 1 and final["samples"].shape == (2, 4, 6, 5)
    assert final["batch_index"] == [4, 5]


@pytest.mark.parametrize("target, over, message", [
    ((24, 80), {}, "smaller than the base"),
    ((132, 80), {}, "multiples of 8"),
    ((32, 48), {}, "size of the input latent already"),
    (TARGET, {"K": 1000.0}, "'K'"),
    (TARGET, {"steps": 0}, "'steps'"),
    (TARGET, {"sampler_name": "nope"}, "'sampler_name'"),
    (TARGET, {"seed": 0xFFFFFFFFFFFFFFFF}, "stage 2 would use seed"),
])
def test_bad_inputs_fail_before_any_sampling(pack, tiny_model, cond, monkeypatch, target, over, message):
    import comfy.sample
    from self_cascade.nodes.common import SelfCascadeError

    def no_sampling(*a, **k):
        raise AssertionError("sampled despite a bad input")

    monkeypatch.setattr(comfy.sample, "sample_custom", no_sampling)
    with pytest.raises(SelfCascadeError, match=message):
        _upscale(tiny_model, cond, _base(), target=target, **over)


def test_bad_upsamplers_fail_before_any_sampling(pack, tiny_model, cond, monkeypatch):
    import comfy.sample
    from self_cascade.nodes.common import SelfCascadeError

    monkeypatch.setattr(comfy.sample, "sample_custom", lambda *a, **k: pytest.fail("sampled"))
    with pytest.raises(SelfCascadeError, match="not a Self-Cascade upsampler set"):
        _upscale(tiny_model, cond, _base(), upsamplers="not a set")
    with pytest.raises(SelfCascadeError, match="'strength'"):
        _upscale(tiny_model, cond, _base(), upsamplers="not a set", strength=-1.0)


def test_one_progress_bar_over_every_stage_and_cancel_between_stages(pack, tiny_model, cond, monkeypatch):
    """One bar: every report is (steps done so far, executed steps of all stages), rising by one per sampler
    step from 1 to the total (never back to 1 at the next stage). An interrupt raised between stages stops
    the node before the next stage samples."""
    import comfy.model_management
    import comfy.utils
    from self_cascade.nodes import upscale as upscale_mod
    from self_cascade.nodes.timesteps import cascade_sigmas

    per_stage = len(cascade_sigmas(tiny_model, SAMPLING["K"], SAMPLING["steps"], SAMPLING["scheduler"])[1]) - 1
    total = per_stage * len(PLAN)
    seen = []
    old = comfy.utils.PROGRESS_BAR_HOOK
    try:
        comfy.utils.set_progress_bar_global_hook(lambda v, t, preview, node_id=None: seen.append((v, t)))
        _, _, plan = _upscale(tiny_model, cond, _base())
        assert seen == [(v, total) for v in range(1, total + 1)], seen
        assert f"{total} steps executed" in plan, plan

        real = upscale_mod.cascade_stage
        ran = []

        def stage_then_cancel(*a, **k):
            ran.append(1)
            out = real(*a, **k)
            comfy.model_management.interrupt_current_processing(True)
            return out

        monkeypatch.setattr(upscale_mod, "cascade_stage", stage_then_cancel)
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            _upscale(tiny_model, cond, _base())
        assert ran == [1], "the second stage ran despite the interrupt"
    finally:
        comfy.model_management.interrupt_current_processing(False)
        comfy.utils.set_progress_bar_global_hook(old)


def test_tuned_upscale_uses_the_upsamplers(pack, tiny_model, cond):
    from self_cascade.nodes.patch import model_family
    from self_cascade.upsampler.modules import UpsamplerSet
    from self_cascade.upsampler.taps import derive_taps, emb_dim

    unet = tiny_model.model.diffusion_model
    uset = UpsamplerSet.create(derive_taps(unet), emb_dim(unet), model_family(tiny_model), "light")
    plain, _, _ = _upscale(tiny_model, cond, _base())
    tuned, stages, _ = _upscale(tiny_model, cond, _base(), upsamplers=uset, end_timestep=0.0)
    assert tuned["samples"].shape == plain["samples"].shape and len(stages) == 2
    assert torch.isfinite(tuned["samples"]).all() and (tuned["samples"] - plain["samples"]).abs().max() > 1e-3


def test_node_schema(pack):
    from self_cascade.nodes.stage import SelfCascadeStage
    from self_cascade.nodes.upscale import SelfCascadeUpscale

    s = SelfCascadeUpscale.define_schema()
    assert s.node_id == "SelfCascadeUpscale" and all(i.tooltip for i in s.inputs)
    stage = {i.id: i for i in SelfCascadeStage.define_schema().inputs}
    for name in ("upscale_method", "seed", "steps", "cfg", "sampler_name", "scheduler", "K", "strength",
                 "end_timestep"):
        mine = next(i for i in s.inputs if i.id == name)
        assert mine.default == stage[name].default, name
    assert [o.is_output_list for o in s.outputs] == [False, True, False]
    ids = [i.id for i in SelfCascadeStage.define_schema().inputs]
    assert ids[-3:] == ["width", "height", "K_mode"] and stage["width"].optional and stage["width"].default == 0
    # new inputs come last and optional, with defaults that keep old prompts and saved widget values unchanged
    new = {i.id: i for i in s.inputs[-3:]}
    assert list(new) == ["K_mode", "K_later", "crop"] and all(i.optional for i in new.values())
    assert (new["K_mode"].default, new["K_later"].default, new["crop"].default) == ("fixed", 0.0, "disabled")
    assert new["crop"].options == ["disabled", "center"] and stage["K_mode"].options == ["fixed", "auto"]


def _prompt(ckpt: str) -> dict:
    sampling = dict(SAMPLING, steps=4)
    text = {"clip": ["1", 1]}
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cat", **text}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", **text}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 48, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
            "seed": 1, "steps": 2, "cfg": 3.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "6": {"class_type": "SelfCascadeUpscale", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent": ["5", 0],
            "width": TARGET[0], "height": TARGET[1], **sampling}},
        "7": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 0], "filename_prefix": "upscale_final"}},
        "8": {"class_type": "SaveLatent", "inputs": {"samples": ["6", 1], "filename_prefix": "upscale_stages"}},
        # Stage Plan drives a Stage through the new width/height inputs: equals the node's first stage.
        "9": {"class_type": "SelfCascadeStagePlan", "inputs": {
            "base_width": 32, "base_height": 48, "target_width": TARGET[0], "target_height": TARGET[1]}},
        "10": {"class_type": "SelfCascadeStage", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent": ["5", 0], "scale": 2.0,
            "width": ["9", 2], "height": ["9", 3], **sampling}},
        "11": {"class_type": "SaveLatent", "inputs": {"samples": ["10", 0], "filename_prefix": "plan_stage"}},
        # An old Stage prompt (no width/height inputs at all) keeps working: scale 2.
        "12": {"class_type": "SelfCascadeStage", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent": ["5", 0], "scale": 2.0,
            **sampling}},
        "13": {"class_type": "SaveLatent", "inputs": {"samples": ["12", 0], "filename_prefix": "old_stage"}},
        # The new inputs through POST /prompt: auto K (SD1.5: 700 stays 700), K_later, crop center.
        "14": {"class_type": "SelfCascadeUpscale", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent": ["5", 0],
            "width": TARGET[0], "height": TARGET[1], **sampling, "K_mode": "auto", "K_later": 600.0,
            "crop": "center"}},
        "15": {"class_type": "SaveLatent", "inputs": {"samples": ["14", 0], "filename_prefix": "upscale_new"}},
        "16": {"class_type": "SelfCascadeStage", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent": ["5", 0], "scale": 2.0,
            **sampling, "K_mode": "auto"}},
        "17": {"class_type": "SaveLatent", "inputs": {"samples": ["16", 0], "filename_prefix": "auto_stage"}},
    }


def test_upscale_through_the_server(comfy_server, client, tiny_checkpoint):
    """POST /prompt: 32x48 px -> exactly 136x80 px in one node; its stage list saved once per stage; Stage Plan's
    first size drives a Stage to the node's first stage; an old Stage prompt without width/height runs."""
    import safetensors.torch

    entry = client.run(_prompt(tiny_checkpoint), timeout=300)

    def saved(node: str) -> list[torch.Tensor]:
        files = entry["outputs"][node]["latents"]
        return [safetensors.torch.load_file(str(comfy_server.base_dir / "output" / f["subfolder"] / f["filename"]))
                ["latent_tensor"] for f in files]

    (final,) = saved("7")
    assert tuple(final.shape) == (1, 4, TARGET[1] // 8, TARGET[0] // 8)
    assert torch.isfinite(final).all() and final.std() > 0.01
    stages = saved("8")
    assert [tuple(t.shape[-2:]) for t in stages] == [(h // 8, w // 8) for w, h in PLAN]
    assert torch.equal(stages[-1], final)
    (plan_stage,) = saved("11")
    assert torch.equal(plan_stage, stages[0]), "Stage driven by Stage Plan's first size != the node's first stage"
    (old,) = saved("13")
    assert tuple(old.shape) == (1, 4, 12, 8) and torch.isfinite(old).all()
    (new,) = saved("15")
    assert tuple(new.shape) == tuple(final.shape) and torch.isfinite(new).all() and not torch.equal(new, final)
    (auto,) = saved("17")
    assert torch.equal(auto, old), "K_mode auto on an SD1.5 checkpoint must be the old stage (K 700)"


def test_k_later_and_k_mode(pack, tiny_model, cond):
    """K_later runs the stages after the first at their own K (equal to chaining Stages with K then K_later);
    K_mode auto on SD1.x's schedule keeps both Ks; the plan names the Ks and the executed steps."""
    from self_cascade.nodes.cascade import StageSettings
    from self_cascade.nodes.upscale import upscale

    base = _base()
    final, stages, plan = upscale(tiny_model, cond, cond, base, StageSettings(**SAMPLING), TARGET, k_later=500.0,
                                  disable_pbar=True)
    chain = base
    for i, ((w, h), k) in enumerate(zip(PLAN, (700.0, 500.0), strict=True)):
        chain = run_stage(tiny_model, cond, cond, chain, **{**SAMPLING, "seed": SAMPLING["seed"] + i, "K": k},
                          width=w, height=h)
        assert torch.equal(chain["samples"], stages[i]["samples"]), i
    same_k, _, _ = _upscale(tiny_model, cond, base)
    assert not torch.equal(same_k["samples"], final["samples"])
    assert "K 700, later stages K 500" in plan, plan
    auto, _, auto_plan = upscale(tiny_model, cond, cond, base, StageSettings(**SAMPLING), TARGET, k_later=500.0,
                                 k_mode="auto", disable_pbar=True)
    assert torch.equal(auto["samples"], final["samples"]), "700/500 auto on SD1.x's own schedule = fixed"
    assert "(K_mode auto from 700/500 in SD1.x units)" in auto_plan, auto_plan


def test_k_later_auto_converts_on_a_flow_model(pack, cond):
    from self_cascade.nodes.cascade import StageSettings
    from self_cascade.nodes.timesteps import equal_snr_k
    from self_cascade.nodes.upscale import upscale

    flow = tiny_models.tiny_flow(seed=0)
    ms = flow.get_model_object("model_sampling")
    _, _, plan = upscale(flow, cond, cond, _base(), StageSettings(**SAMPLING), TARGET, k_later=600.0,
                         k_mode="auto", disable_pbar=True)
    k1, k2 = equal_snr_k(ms, 700.0), equal_snr_k(ms, 600.0)
    assert round(k1) == 526 and k2 < k1 and f"K {k1:g}, later stages K {k2:g}" in plan, plan


@pytest.mark.parametrize("base_shape, target, kept, cut", [
    ((1, 4, 8, 8), (200, 120), (4, 8), "32 px of height"),  # 64x64 -> 200x120: the example
    ((1, 4, 16, 16), (256, 144), (8, 16), "64 px of height"),  # square -> 16:9 (as 1024^2 -> 3840x2160)
    ((1, 4, 6, 4), (40, 120), (6, 2), "16 px of width"),
])
def test_crop_center_cuts_the_base_to_the_target_aspect(pack, tiny_model, cond, base_shape, target, kept, cut):
    """crop center: the base's middle (ComfyUI's common_upscale rule) is the first stage's input, so the final
    latent equals running the uncropped plan on that cut by hand; the plan says what was cut."""
    import comfy.utils
    from self_cascade.nodes.cascade import StageSettings
    from self_cascade.nodes.upscale import upscale

    base = _base(shape=base_shape)
    final, stages, plan = upscale(tiny_model, cond, cond, base, StageSettings(**SAMPLING), target, crop="center",
                                  disable_pbar=True)
    core = comfy.utils.common_upscale(base["samples"], kept[1], kept[0], "nearest-exact", "center")
    assert tuple(core.shape[-2:]) == kept, "the expected cut disagrees with ComfyUI's own center crop"
    by_hand, _, _ = _upscale(tiny_model, cond, {"samples": core.contiguous()}, target=target)
    assert torch.equal(final["samples"], by_hand["samples"])
    assert final["samples"].shape[-2:] == (target[1] // 8, target[0] // 8)
    h, w = base_shape[-2:]
    assert plan.startswith(f"crop center: {w * 8}x{h * 8} -> {kept[1] * 8}x{kept[0] * 8} ({cut}"), plan
    stretched, _, plain = _upscale(tiny_model, cond, base, target=target)
    assert not plain.startswith("crop") and not torch.equal(stretched["samples"], final["samples"])


def test_crop_center_same_aspect_and_bad_values(pack, tiny_model, cond):
    from self_cascade.nodes.cascade import StageSettings
    from self_cascade.nodes.common import SelfCascadeError
    from self_cascade.nodes.upscale import upscale

    run = dict(disable_pbar=True)
    same, _, plan = upscale(tiny_model, cond, cond, _base(), StageSettings(**SAMPLING), (64, 96), crop="center",
                            **run)
    plain, _, _ = _upscale(tiny_model, cond, _base(), target=(64, 96))
    assert torch.equal(same["samples"], plain["samples"]) and "nothing to cut" in plan
    with pytest.raises(SelfCascadeError, match="'crop'"):
        upscale(tiny_model, cond, cond, _base(), StageSettings(**SAMPLING), TARGET, crop="edges", **run)
    with pytest.raises(SelfCascadeError, match="leaves nothing"):
        upscale(tiny_model, cond, cond, _base(), StageSettings(**SAMPLING), (16384, 8), crop="center", **run)
