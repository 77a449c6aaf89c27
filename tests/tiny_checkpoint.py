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

import hashlib
import json
import os
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


def _write(path: str | Path, shapes: dict[str, tuple], seed: int, comment: str, fixed: dict | None = None) -> dict:
    """Seeded random fp16 tensors of ``shapes`` (plus ``fixed`` ones as given) written atomically to ``path``."""
    import safetensors.torch

    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    sd = {name: _init(name, shape, g).to(torch.float16) for name, shape in sorted(shapes.items())}
    sd.update(fixed or {})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.partial")
    safetensors.torch.save_file(sd, str(tmp), metadata={"comment": comment})
    tmp.replace(path)
    return {"seconds": time.perf_counter() - t0, "bytes": path.stat().st_size,
            "params": sum(t.numel() for t in sd.values())}


def build_tiny_sd15_checkpoint(path: str | Path, seed: int = 0) -> dict:
    """Write the checkpoint to ``path`` (fp16 safetensors). Returns {"seconds", "bytes", "params"}."""
    return _write(path, checkpoint_shapes(), seed, f"random SD1.5-shaped test checkpoint, seed {seed}")


# --- SDXL -------------------------------------------------------------------------------------
# ComfyUI's SDXL config class matches model_channels 320, linear transformer projections,
# transformer_depth [0, 0, 2, 2, 10, 10] (read per input res block: 3 levels x 2 res blocks),
# context_dim 2048 and adm_in_channels 2816 (SDXL's label embedding: pooled CLIP-G text + six size
# numbers). channel_mult, the output blocks' depth and the middle block are not checked, so every
# level stays at 320 channels, the output blocks hold one transformer each at levels 1-2, and the
# middle block is one res block: 154 M parameters instead of SDXL's 2.6 G. CLIP-L and CLIP-G
# (OpenCLIP bigG, 695 M) are full size for the reason given above; the VAE is SD's KL-f8 (SDXL's
# VAE has the same layout). About 1.06 G parameters, 2.1 GB in fp16: built once and cached
# outside the repository (SDXL_CACHE), keyed by a hash of every name and shape and the seed.
SDXL_FILENAME = "tiny_sdxl.safetensors"
SDXL_UNET_CONFIG = dict(
    image_size=32, in_channels=4, out_channels=4, model_channels=320,
    num_res_blocks=[2, 2, 2], channel_mult=[1, 1, 1], transformer_depth=[0, 0, 2, 2, 10, 10],
    transformer_depth_output=[0, 0, 0, 1, 1, 1, 1, 1, 1], transformer_depth_middle=-1,
    context_dim=2048, num_head_channels=64, use_linear_in_transformer=True, use_spatial_transformer=True,
    legacy=False, num_classes="sequential", adm_in_channels=2816,
    use_temporal_attention=False, use_temporal_resblock=False,
)
SDXL_CACHE = Path(os.environ.get("SELF_CASCADE_TEST_CACHE", Path.home() / ".cache" / "self_cascade_tests"))


def sdxl_checkpoint_parts() -> tuple[dict[str, tuple], dict[str, torch.Tensor]]:
    """(name -> shape of every random tensor, fixed non-random tensors) of the SDXL-shaped checkpoint,
    in the key layout of an SDXL checkpoint file (ComfyUI's own save conversion of its CLIP modules)."""
    import comfy.ldm.models.autoencoder as autoencoder
    import comfy.ops
    import comfy.sdxl_clip
    import comfy.supported_models
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel

    shapes = _meta_shapes("model.diffusion_model.",
                          lambda: UNetModel(**SDXL_UNET_CONFIG, operations=comfy.ops.disable_weight_init))
    with torch.device("meta"):
        clip = comfy.sdxl_clip.SDXLClipModel(device="meta").state_dict()
    saved = comfy.supported_models.SDXL(dict(SDXL_UNET_CONFIG)).process_clip_state_dict_for_saving(clip)
    fixed = {k: v.contiguous() for k, v in saved.items() if v.device.type != "meta"}  # position_ids
    shapes.update({k: tuple(v.shape) for k, v in saved.items() if k not in fixed})
    shapes.update(_meta_shapes("first_stage_model.",
                               lambda: autoencoder.AutoencoderKL(ddconfig=dict(VAE_DDCONFIG), embed_dim=4)))
    return shapes, fixed


def tiny_sdxl_checkpoint(seed: int = 0, cache: Path | None = None) -> Path:
    """The SDXL-shaped checkpoint, built on first use and cached (``cache``/tiny_sdxl-<hash>.safetensors)."""
    shapes, fixed = sdxl_checkpoint_parts()
    key = json.dumps([sorted(shapes.items()), sorted(fixed), seed, "init-v1"])
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    path = Path(cache or SDXL_CACHE) / f"tiny_sdxl-{digest}.safetensors"
    if not path.is_file():
        _write(path, shapes, seed, f"random SDXL-shaped test checkpoint, seed {seed}", fixed)
    return path


if __name__ == "__main__":  # python tests/tiny_checkpoint.py OUT.safetensors (inside the host venv)
    import sys

    import hostenv  # the dev host harness (dev/ is on the host venv's path)

    hostenv.prepare_in_process()
    print(build_tiny_sd15_checkpoint(sys.argv[1] if len(sys.argv) > 1 else FILENAME))
