"""A TUNED stage (upsamplers connected) composed with what users stack: LoRA (stock loader function),
ControlNet (stock apply node, tiny random ControlNet built from the tiny UNet's config), FreeU_V2 and
Deep Shrink (core PatchModelAddDownscale). Each runs on the tiny SD1.5-style model and gives finite
results that differ both from the tuned stage without it (it acts) and from it without our upsamplers
(ours still acts)."""
from __future__ import annotations

import pytest
import tiny_models
import torch
from tiny_models import run_stage

STAGE = dict(scale=2.0, upscale_method="bicubic", seed=5, steps=8, cfg=2.0, sampler_name="euler",
             scheduler="normal", K=700.0)


@pytest.fixture(scope="module")
def setup(pack):
    from self_cascade.nodes.untrained import untrained_set

    model = tiny_models.tiny_sd15(seed=0)
    cond = tiny_models.conditioning(3)
    base = {"samples": torch.randn(1, 4, 4, 6, generator=torch.Generator().manual_seed(0))}
    uset = untrained_set(model)
    tuned = run_stage(model, cond, cond, base, uset, **STAGE, end_timestep=0.0)["samples"]
    return model, cond, base, uset, tuned


def _check(setup, model=None, pos=None, neg=None) -> None:
    """``model``/conditioning with the stacked extra: tuned != tuned without it, and != it without upsamplers."""
    plain_model, cond, base, uset, tuned = setup
    model = model or plain_model
    pos, neg = pos or cond, neg or cond
    both = run_stage(model, pos, neg, base, uset, **STAGE, end_timestep=0.0)["samples"]
    extra_only = run_stage(model, pos, neg, base, **STAGE)["samples"]
    assert both.shape == tuned.shape and torch.isfinite(both).all()
    assert (both - tuned).abs().max() > 1e-3, "the stacked extra had no effect on the tuned stage"
    assert (both - extra_only).abs().max() > 1e-3, "our upsamplers had no effect next to the stacked extra"


def _random_lora(model, rank: int = 4, seed: int = 1) -> dict:
    """A LoRA state dict (kohya 'lora_unet_*' names) for every 2-D weight of the tiny UNet's attention layers."""
    import comfy.lora

    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    weights = model.model.state_dict()
    g = torch.Generator().manual_seed(seed)
    lora = {}
    for name, target in key_map.items():
        w = weights.get(target)
        if not name.startswith("lora_unet_") or w is None or w.ndim != 2 or ".attn" not in target:
            continue
        lora[f"{name}.lora_up.weight"] = torch.randn(w.shape[0], rank, generator=g) * 0.3
        lora[f"{name}.lora_down.weight"] = torch.randn(rank, w.shape[1], generator=g) * 0.3
        lora[f"{name}.alpha"] = torch.tensor(float(rank))
    assert len(lora) >= 3 * 8, f"too few LoRA layers: {len(lora) // 3}"
    return lora


def test_lora(setup):
    import comfy.sd

    model = setup[0]
    lora = _random_lora(model)
    lora_model, clip = comfy.sd.load_lora_for_models(model, None, lora, 1.0, 0.0)
    assert clip is None and lora_model.patches, "the LoRA was not applied"
    _check(setup, model=lora_model)


def _tiny_controlnet():
    """ComfyUI's own ControlNet class over a seeded cldm.ControlNet with the tiny UNet's config (3-channel hint),
    built as comfy.controlnet.load_controlnet_state_dict builds it once a file is parsed. (Loading it from a
    state dict does not work here: ComfyUI's model detection does not recognise the tiny UNet config and
    guesses a wrong head layout.) The zero convs are seeded too: a fresh ControlNet's are zero and do nothing."""
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.model_management

    cfg = tiny_models._unet_config()
    cfg.pop("out_channels")
    cfg.update(hint_channels=3, num_heads=-1, num_head_channels=8)
    net = comfy.cldm.cldm.ControlNet(**cfg)
    tiny_models.seed_weights(net, 2, scale=0.5)
    return comfy.controlnet.ControlNet(net, load_device=comfy.model_management.get_torch_device())


def test_controlnet_on_the_stage_conditioning(setup):
    from nodes import ControlNetApplyAdvanced

    _, cond, *_ = setup
    image = torch.rand(1, 64, 96, 3, generator=torch.Generator().manual_seed(4))  # pixels of the stage's size
    pos, neg = ControlNetApplyAdvanced().apply_controlnet(cond, cond, _tiny_controlnet(), image, 1.0, 0.0, 1.0)
    assert "control" in pos[0][1] and "control" not in cond[0][1]
    _check(setup, pos=pos, neg=neg)


def test_freeu_v2(setup):
    from comfy_extras.nodes_freelunch import FreeU_V2

    (freeu,) = FreeU_V2().patch(setup[0], 1.3, 1.4, 0.9, 0.2)
    _check(setup, model=freeu)


def test_deep_shrink(setup):
    from comfy_extras.nodes_model_downscale import PatchModelAddDownscale

    (shrunk,) = PatchModelAddDownscale.execute(setup[0], 1, 2.0, 0.0, 1.0, True, "bicubic", "bicubic").result
    _check(setup, model=shrunk)
