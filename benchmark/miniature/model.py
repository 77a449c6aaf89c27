"""The benchmark's base model: ComfyUI's own UNetModel in pixel space, as a real BaseModel/ModelPatcher.

Pixel space is the "latent": 3 channels (images in -1..1, see scenes.to_latent). The latent format's
``scale_factor`` (LATENT_SCALE = 4) puts the data the sampler sees (after ``process_latent_in``) at
std about 1, like SD's VAE latents after their 0.18215 factor; with scale 1 (the first miniature)
the sampler saw std about 0.25 and every K meant 16x less pivot signal than in SD.
SD1.5's schedule (ComfyUI's default ModelSamplingDiscrete: scaled_linear 0.00085..0.012), v-prediction.
A pure-conv 3-level UNet (no attention). The committed base model is unconditional (its
CONDITIONING, ``positive()``/``negative()``, is a zero cross-attn tensor the network ignores). The
captioned base model (``CAPTION_WEIGHTS``) adds ComfyUI's own class embedding (``num_classes=
"sequential"``, the ``y`` input SDXL uses): the caption, a one-hot shape and colour class
(scenes.captions), travels as the conditioning's ``pooled_output``; all zeros is the null caption
(caption dropout, the negative of cfg > 1).
"""
from __future__ import annotations

from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
#: Prediction target of the base model ("v" or "eps"); train_base.py trains for it.
PREDICTION = "v"
#: Latent format scale factor: pixels in -1..1 times this is what the sampler (and training) sees.
LATENT_SCALE = 4.0
WEIGHTS = REPO / "benchmark" / "weights" / "base.safetensors"
#: A small light upsampler set trained for WEIGHTS (evaluate.py --save-upsamplers), for dev/run.
TOY_UPSAMPLERS = REPO / "benchmark" / "weights" / "toy_upsamplers.safetensors"
#: The captioned base model (train_base.py --caption), used by the training-recipe benchmark.
CAPTION_WEIGHTS = REPO / "benchmark" / "weights" / "base_caption.safetensors"

UNET_CONFIG = dict(
    image_size=32, in_channels=3, out_channels=3, model_channels=32,
    num_res_blocks=[1, 1, 1], channel_mult=[1, 2, 2], transformer_depth=[0, 0, 0],
    transformer_depth_output=[0, 0, 0, 0, 0, 0], transformer_depth_middle=-1,
    context_dim=None, use_spatial_transformer=False, legacy=False, adm_in_channels=None,
    use_linear_in_transformer=False, use_temporal_attention=False, use_temporal_resblock=False,
)


def prepare() -> None:
    """Make ``import comfy`` work in this process (CPU) via the dev host harness."""
    import hostenv  # the dev host harness (dev/ is on the host venv's path)

    hostenv.prepare_in_process()


def _classes(caption_dim: int = 0):
    import comfy.latent_formats
    import comfy.model_base
    import comfy.supported_models_base

    class PixelLatent(comfy.latent_formats.LatentFormat):
        """RGB pixels in -1..1 as the latent: 3 channels, scaled by LATENT_SCALE for the sampler."""

        latent_channels = 3
        scale_factor = LATENT_SCALE
        latent_rgb_factors = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
        latent_rgb_factors_bias = [0.0, 0.0, 0.0]

    class PixelUNet(comfy.supported_models_base.BASE):
        """Benchmark model family: pixel-space UNet (SD1.5 schedule, PREDICTION target)."""

        unet_config = {"in_channels": 3, "model_channels": 32, "context_dim": None}
        unet_extra_config = {"num_heads": -1, "num_head_channels": 32}
        latent_format = PixelLatent
        memory_usage_factor = 1.0

        def model_type(self, state_dict, prefix=""):
            import comfy.model_base

            return comfy.model_base.ModelType.V_PREDICTION if PREDICTION == "v" else comfy.model_base.ModelType.EPS
        supported_inference_dtypes = [torch.float32]

        def get_model(self, state_dict, prefix="", device=None):
            if not caption_dim:
                return super().get_model(state_dict, prefix, device)
            return CaptionModel(self, model_type=self.model_type(state_dict, prefix), device=device)

    class CaptionModel(comfy.model_base.BaseModel):
        """The captioned model: the conditioning's ``pooled_output`` is the UNet's class input ``y``."""

        def encode_adm(self, **kwargs):
            y = kwargs.get("pooled_output")
            return torch.zeros(1, caption_dim) if y is None else y  # no caption given: the null caption

    return PixelLatent, PixelUNet


def build_model(seed: int = 0, caption: bool = False):
    """A fresh BaseModel (ComfyUI's UNetModel, default torch init under a fixed seed); ``caption``:
    with the class embedding of the captioned model (its last layer zero: it starts unconditional)."""
    from .scenes import CAPTION_DIM

    prepare()
    dim = CAPTION_DIM if caption else 0
    _, PixelUNet = _classes(dim)
    unet_config = dict(UNET_CONFIG, **({"num_classes": "sequential", "adm_in_channels": dim} if caption else {}))
    config = PixelUNet(unet_config)
    model = config.get_model({})
    torch.manual_seed(seed)  # ComfyUI's ops skip init: apply torch's default init, seeded
    for m in model.diffusion_model.modules():
        for cls in (torch.nn.Conv2d, torch.nn.Linear, torch.nn.GroupNorm):
            if isinstance(m, cls):
                cls.reset_parameters(m)
    if caption:
        torch.nn.init.zeros_(model.diffusion_model.label_emb[0][2].weight)
        torch.nn.init.zeros_(model.diffusion_model.label_emb[0][2].bias)
    return model


def to_patcher(model):
    """Wrap a BaseModel as a ModelPatcher on ComfyUI's current device."""
    import comfy.model_management
    import comfy.model_patcher

    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


def load_base_model(path: Path | str = WEIGHTS):
    """A trained base model as a ModelPatcher (eval mode, float32); captioned when its weights are."""
    import safetensors.torch

    sd = safetensors.torch.load_file(str(path))
    model = build_model(0, caption=is_captioned(sd))
    model.diffusion_model.load_state_dict(sd, strict=True)
    model.diffusion_model.eval()
    return to_patcher(model)


def is_captioned(state_dict: dict) -> bool:
    return any(k.startswith("label_emb.") for k in state_dict)


def caption_cond(caption: torch.Tensor) -> list:
    """CONDITIONING for the captioned model: one caption per sample, (N, CAPTION_DIM) (zeros: null)."""
    return [[torch.zeros(caption.shape[0], 1, 8), {"pooled_output": caption.float()}]]


def positive(batch: int = 1) -> list:
    """CONDITIONING for the unconditional model: a zero cross-attn tensor the UNet ignores."""
    return [[torch.zeros(batch, 1, 8), {}]]


def negative(batch: int = 1) -> list:
    """Same as positive (cfg 1 never evaluates it; cfg > 1 gives identical uncond)."""
    return [[torch.zeros(batch, 1, 8), {}]]


def param_count(model) -> int:
    return sum(p.numel() for p in model.diffusion_model.parameters())
