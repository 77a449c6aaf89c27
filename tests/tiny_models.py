"""Tiny real ComfyUI models for in-process tests: real BaseModel/UNetModel classes, seeded weights.

ComfyUI's ops skip weight initialisation, so every parameter is filled here from a seeded
generator (fan-in scaled normal), which makes outputs depend on inputs and be reproducible.
"""
from __future__ import annotations

import torch

CONTEXT_DIM = 32


def _unet_config(**over) -> dict:
    cfg = dict(
        image_size=32, in_channels=4, out_channels=4, model_channels=32,
        num_res_blocks=[1, 1], channel_mult=[1, 2], transformer_depth=[1, 1],
        transformer_depth_output=[1, 1, 1, 1], transformer_depth_middle=1,
        context_dim=CONTEXT_DIM, num_head_channels=-1, use_linear_in_transformer=False,
        adm_in_channels=None, use_spatial_transformer=True, legacy=False,
        use_temporal_attention=False, use_temporal_resblock=False,
    )
    cfg.update(over)
    return cfg


def seed_weights(module: torch.nn.Module, seed: int, scale: float = 1.0) -> None:
    """Fill every parameter from a seeded generator: weights ~ N(0, scale/fan_in), biases small."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(module.named_parameters()):
            if p.numel() == 0:
                continue
            if p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) * (scale / fan_in) ** 0.5)
            elif name.endswith("weight"):  # norms
                p.copy_(1.0 + 0.05 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.02 * torch.randn(p.shape, generator=g))


def _patcher(config_cls, unet_config: dict, seed: int, model_type=None):
    import comfy.model_management
    import comfy.model_patcher

    config = config_cls(unet_config)
    # the family's extra config (head layout) is applied over ours; keep 4 heads of 8 channels
    config.unet_config.update(num_heads=-1, num_head_channels=8)
    if model_type is not None:
        config.model_type = lambda state_dict, prefix="": model_type
    model = config.get_model({})
    seed_weights(model.diffusion_model, seed, scale=0.5)
    with torch.no_grad():  # keep the eps prediction O(1) so sampling stays bounded
        model.diffusion_model.out[-1].weight.mul_(0.1)
    model.diffusion_model.eval()
    dev = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=dev, offload_device=comfy.model_management.unet_offload_device())


def tiny_sd15(seed: int = 0, **over):
    """An SD1.5-style (eps) model: 2 levels, one transformer per level, cross-attention dim 32."""
    import comfy.supported_models

    return _patcher(comfy.supported_models.SD15, _unet_config(**over), seed)


def tiny_sd21v(seed: int = 0, **over):
    """An SD2.1-768-style v-prediction model (same tiny UNet, V_PREDICTION sampling)."""
    import comfy.model_base
    import comfy.supported_models

    return _patcher(comfy.supported_models.SD20, _unet_config(use_linear_in_transformer=True, **over), seed,
                    model_type=comfy.model_base.ModelType.V_PREDICTION)


def tiny_flow(seed: int = 0, shift: float = 3.0, **over):
    """A flow-matching (CONST, ModelSamplingDiscreteFlow as SD3) model over the same tiny UNet, with ``shift``."""
    import comfy.model_base
    import comfy.supported_models

    patcher = _patcher(comfy.supported_models.SD15, _unet_config(**over), seed,
                       model_type=comfy.model_base.ModelType.FLOW)
    patcher.model.model_sampling.set_parameters(shift=shift)
    return patcher


def tiny_sdxl(seed: int = 0, **over):
    """An SDXL-style model: label_emb over SDXL's 2816-wide ADM vector (pooled text + sizes)."""
    import comfy.supported_models

    cfg = _unet_config(adm_in_channels=2816, num_classes="sequential", use_linear_in_transformer=True,
                       transformer_depth=[0, 1], transformer_depth_output=[0, 0, 1, 1])
    cfg.update(over)
    return _patcher(comfy.supported_models.SDXL, cfg, seed)


def conditioning(seed: int, batch: int = 1, tokens: int = 8, pooled: bool = False) -> list:
    """A ComfyUI CONDITIONING list with a random seeded text embedding (and pooled output for SDXL)."""
    g = torch.Generator().manual_seed(seed)
    extra = {}
    if pooled:
        extra["pooled_output"] = torch.randn(batch, 1280, generator=g)
    return [[torch.randn(batch, tokens, CONTEXT_DIM, generator=g), extra]]


def run_stage(model, positive, negative, latent, upsamplers=None, disable_pbar=True, **settings):
    """``cascade_stage`` with its settings given as keywords (the tests vary one at a time)."""
    from self_cascade.nodes.cascade import StageSettings, cascade_stage

    return cascade_stage(model, positive, negative, latent, StageSettings(**settings), upsamplers,
                         disable_pbar=disable_pbar)


def tiny_wan21(seed: int = 0):
    """A tiny random Wan 2.1 text-to-video model (ComfyUI's own WAN21 BaseModel, flow, shift 8): 5-D latents
    (B, 16, T, H, W) with 16-dim text tokens."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models

    config = comfy.supported_models.WAN21_T2V(dict(
        image_model="wan2.1", model_type="t2v", patch_size=(1, 2, 2), in_dim=16, out_dim=16, dim=32, ffn_dim=64,
        freq_dim=32, text_dim=WAN_TEXT_DIM, num_heads=2, num_layers=2))
    model = config.get_model({})
    seed_weights(model.diffusion_model, seed, scale=0.5)
    model.diffusion_model.eval()
    dev = comfy.model_management.get_torch_device()
    return comfy.model_patcher.ModelPatcher(model, load_device=dev,
                                            offload_device=comfy.model_management.unet_offload_device())


WAN_TEXT_DIM = 16


def wan_conditioning(seed: int = 0, tokens: int = 5):
    g = torch.Generator().manual_seed(seed)
    return [[torch.randn(1, tokens, WAN_TEXT_DIM, generator=g), {}]]
