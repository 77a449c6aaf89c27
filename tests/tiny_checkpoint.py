"""A seeded random-weight SD1.5-shaped checkpoint that ComfyUI's stock CheckpointLoaderSimple loads.

ComfyUI detects SD1.x from the UNet keys alone (model_channels 320, context_dim 768 read from
the first input transformer's attn2.to_k, conv proj_in, no label_emb, in_channels 4); depth,
channel_mult and block counts are read from the keys, not checked. So the UNet here is stripped
down (one level, one res block, one transformer, a middle block of one res block: 21.0 M
parameters; the middle block is there because the tuned upsamplers tap it, as in every real UNet). The text
encoder (CLIP-L, 12 layers) and the VAE (SD's KL-f8: ``ch_mult`` is fixed by ComfyUI unless the
x4-upscaler layout is detected) are full size, because ComfyUI builds them from fixed configs and
leaves any weight missing from the file uninitialised. All weights are random (seeded), stored
in fp16: about 455 MB on disk (228 M parameters: UNet 21.0 M, CLIP-L 123 M, VAE 84 M).

Key names and shapes come from ComfyUI's own model classes built on the ``meta`` device, so the
file follows whatever the host's classes expect. ``build_tiny_sd15_checkpoint(path)`` writes it.
"""
from __future__ import annotations

import time
from pathlib import Path

import torch

FILENAME = "tiny_sd15.safetensors"

# The stripped-down UNet: what ComfyUI's model detection will read back from the keys.
UNET_CONFIG = dict(
    image_size=32, in_channels=4, out_channels=4, model_channels=320,
    num_res_blocks=[1], channel_mult=[1], transformer_depth=[1], transformer_depth_output=[1, 1],
    transformer_depth_middle=-1, context_dim=768, num_heads=8, num_head_channels=-1,
    use_linear_in_transformer=False, use_spatial_transformer=True, legacy=False, adm_in_channels=None,
)
VAE_DDCONFIG = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3,
                "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
# present in CLIP-L but not in SD1.5 checkpoints (ComfyUI ignores their absence)
_CLIP_SKIP = ("logit_scale", "text_projection")


def _meta_shapes(prefix: str, module_factory) -> dict[str, tuple]:
    with torch.device("meta"):
        module = module_factory()
    return {prefix + k: tuple(v.shape) for k, v in module.state_dict().items()}


def checkpoint_shapes() -> dict[str, tuple]:
    """Every tensor name and shape of the checkpoint, from ComfyUI's classes (needs comfy importable)."""
    import comfy.ldm.models.autoencoder as autoencoder
    import comfy.ops
    import comfy.sd1_clip
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    shapes = _meta_shapes("model.diffusion_model.",
                          lambda: UNetModel(**UNET_CONFIG, operations=comfy.ops.disable_weight_init))
    clip = _meta_shapes("cond_stage_model.", lambda: comfy.sd1_clip.SDClipModel(device="meta"))
    shapes.update({k: v for k, v in clip.items() if not any(s in k for s in _CLIP_SKIP)})
    shapes.update(_meta_shapes("first_stage_model.",
                               lambda: autoencoder.AutoencoderKL(ddconfig=dict(VAE_DDCONFIG), embed_dim=4)))
    return shapes


def _init(name: str, shape: tuple, g: torch.Generator) -> torch.Tensor:
    """Fan-in scaled normal for weights, ~1 for norm scales, small biases (cf. tiny_models.seed_weights)."""
    if len(shape) >= 2:
        fan_in = 1
        for s in shape[1:]:
            fan_in *= s
        scale = 0.5 if name.startswith("model.diffusion_model.") else 1.0
        if name.startswith("model.diffusion_model.out.2."):
            scale *= 0.01  # keep the eps prediction O(0.1) so sampling stays bounded
        return torch.randn(shape, generator=g) * (scale / fan_in) ** 0.5
    if name.endswith("weight"):  # norms
        return 1.0 + 0.05 * torch.randn(shape, generator=g)
    return 0.02 * torch.randn(shape, generator=g)


def build_tiny_sd15_checkpoint(path: str | Path, seed: int = 0) -> dict:
    """Write the checkpoint to ``path`` (fp16 safetensors). Returns {"seconds", "bytes", "params"}."""
    import safetensors.torch

    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    sd = {name: _init(name, shape, g).to(torch.float16) for name, shape in sorted(checkpoint_shapes().items())}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".partial")
    safetensors.torch.save_file(sd, str(tmp), metadata={"comment": f"random SD1.5-shaped test checkpoint, seed {seed}"})
    tmp.replace(path)
    return {"seconds": time.perf_counter() - t0, "bytes": path.stat().st_size,
            "params": sum(t.numel() for t in sd.values())}


if __name__ == "__main__":  # python tests/tiny_checkpoint.py OUT.safetensors (inside the host venv)
    import sys

    import hostenv  # the dev host harness (dev/ is on the host venv's path)

    hostenv.prepare_in_process()
    print(build_tiny_sd15_checkpoint(sys.argv[1] if len(sys.argv) > 1 else FILENAME))
