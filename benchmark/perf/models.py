"""Seeded models from ComfyUI's own configs, conditioning, the device helper, the UNet meter, FLOP counts.

No downloads: every UNet is a real ``comfy.supported_models`` config (``SD15``/``SDXL``) built by
ComfyUI's ``get_model`` and filled from a seeded generator (cost does not depend on the weights).
"""
from __future__ import annotations

import time
from collections import Counter

#: UNet configs as ComfyUI detects them from the SD1.5 / SDXL checkpoints (comfy.model_detection).
_COMMON = dict(in_channels=4, out_channels=4, use_spatial_transformer=True, legacy=False,
               use_temporal_attention=False, use_temporal_resblock=False)
TINY_UNET = dict(_COMMON, image_size=32, model_channels=32, num_res_blocks=[1, 1], channel_mult=[1, 2],
                 transformer_depth=[1, 1], transformer_depth_output=[1, 1, 1, 1], transformer_depth_middle=1,
                 context_dim=32, use_linear_in_transformer=False, adm_in_channels=None)
TINY_SDXL_UNET = dict(TINY_UNET, transformer_depth=[0, 1], transformer_depth_output=[0, 0, 1, 1],
                      use_linear_in_transformer=True, adm_in_channels=2816, num_classes="sequential")
SD15_UNET = dict(_COMMON, image_size=64, model_channels=320, num_res_blocks=[2, 2, 2, 2], channel_mult=[1, 2, 4, 4],
                 transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
                 transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], transformer_depth_middle=1,
                 context_dim=768, use_linear_in_transformer=False, adm_in_channels=None)
SDXL_UNET = dict(_COMMON, image_size=128, model_channels=320, num_res_blocks=[2, 2, 2], channel_mult=[1, 2, 4],
                 transformer_depth=[0, 0, 2, 2, 10, 10], transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10],
                 transformer_depth_middle=10, context_dim=2048, use_linear_in_transformer=True,
                 adm_in_channels=2816, num_classes="sequential")
#: short dtype names of the command lines
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
_TINY_HEADS = dict(num_heads=-1, num_head_channels=8)

#: name -> ComfyUI config class, UNet config, base size (px), text context width, pooled width, head override.
SPECS = {
    "tiny": dict(family="SD15", unet=TINY_UNET, base=64, context=32, pooled=0, heads=_TINY_HEADS),
    "quick": dict(family="SD15", unet=TINY_UNET, base=32, context=32, pooled=0, heads=_TINY_HEADS),
    "tiny_sdxl": dict(family="SDXL", unet=TINY_SDXL_UNET, base=32, context=32, pooled=1280, heads=_TINY_HEADS),
    "sd15": dict(family="SD15", unet=SD15_UNET, base=512, context=768, pooled=0, heads={}),
    "sdxl": dict(family="SDXL", unet=SDXL_UNET, base=1024, context=2048, pooled=1280, heads={}),
}


def build_model(spec: dict, device: str, seed: int = 0, dtype=None):
    """A real ComfyUI BaseModel/ModelPatcher of ``spec`` with seeded random weights (no downloads).

    ``dtype``: the weights' dtype, a torch dtype or a name of ``DTYPES`` (default bf16 on CUDA -- random weights overflow less than in fp16 --
    and fp32 on the CPU).
    """
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models
    import torch

    config = getattr(comfy.supported_models, spec["family"])(dict(spec["unet"]))
    config.unet_config.update(spec["heads"])
    if dtype is None:
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
    elif isinstance(dtype, str):
        dtype = getattr(torch, DTYPES.get(dtype, dtype))
    config.set_inference_dtype(dtype, None)
    dev = torch.device(device)
    model = config.get_model({}, device=dev)
    if dev.type != "meta":
        g = torch.Generator(device=dev).manual_seed(seed)
        with torch.no_grad():
            for name, p in sorted(model.diffusion_model.named_parameters()):
                if p.ndim >= 2:
                    p.copy_(torch.randn(p.shape, generator=g, device=dev, dtype=torch.float32)
                            * (0.5 / p[0].numel()) ** 0.5)
                elif name.endswith("weight"):
                    p.fill_(1.0)
                else:
                    p.zero_()
            model.diffusion_model.out[-1].weight.mul_(0.1)
    model.diffusion_model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


def conditioning(spec: dict, batch: int, seed: int = 1) -> list:
    """A CONDITIONING list: seeded text embedding (77 tokens at real size, 8 tiny) and SDXL's pooled output."""
    import torch

    g = torch.Generator().manual_seed(seed)
    extra = {"pooled_output": torch.randn(batch, spec["pooled"], generator=g)} if spec["pooled"] else {}
    return [[torch.randn(batch, tokens(spec), spec["context"], generator=g), extra]]


def tokens(spec: dict) -> int:
    return 77 if spec["context"] > 32 else 8


class Device:
    """CUDA synchronisation and memory statistics; on the CPU the same calls are no-ops / NaN.

    The CUDA functions are looked up at construction on every device, so a misspelt name fails the
    CPU smoke run instead of the GPU run.
    """

    def __init__(self, kind: str):
        import torch

        self.kind = kind
        self.cuda = kind == "cuda"
        cu = torch.cuda
        self._fns = (cu.synchronize, cu.reset_peak_memory_stats, cu.max_memory_allocated, cu.memory_allocated,
                     cu.empty_cache)

    def sync(self) -> None:
        if self.cuda:
            self._fns[0]()

    def reset_peak(self) -> None:
        if self.cuda:
            self._fns[0]()
            self._fns[1]()

    def peak_mib(self) -> float:
        return self._fns[2]() / 2 ** 20 if self.cuda else float("nan")

    def allocated_mib(self) -> float:
        return self._fns[3]() / 2 ** 20 if self.cuda else float("nan")

    def free(self) -> None:
        """Drop everything ComfyUI holds and return cached blocks (between rows that own their model)."""
        import gc

        import comfy.model_management

        comfy.model_management.unload_all_models()
        if self.cuda:  # (a full collection costs ~1 s in a process with ComfyUI loaded: CUDA only)
            gc.collect()
            self._fns[4]()

    def name(self) -> str:
        import platform

        import torch

        if self.cuda:
            return torch.cuda.get_device_name()
        return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads)"

    def timer(self) -> float:
        """perf_counter after a device sync: the moment all queued work has finished."""
        self.sync()
        return time.perf_counter()


class UnetMeter:
    """Counts UNet forward calls (per latent side) and, if ``timed``, the time inside them (forward hooks; no
    model change)."""

    def __init__(self, unet, device: Device, timed: bool = True):
        self.device, self.timed = device, timed
        self.calls, self.seconds, self._t0 = 0, 0.0, 0.0
        self.by_side: Counter = Counter()  # calls per latent side
        self.samples_by_side: Counter = Counter()  # batch rows per latent side (cond and uncond may be split)
        self._hooks = [unet.register_forward_pre_hook(self._pre), unet.register_forward_hook(self._post)]

    def _pre(self, module, args):
        if self.timed:  # a device sync per call: off for CUDA rows (it would stall the launch queue)
            self._t0 = self.device.timer()
        self.by_side[tuple(args[0].shape[-2:])] += 1
        self.samples_by_side[tuple(args[0].shape[-2:])] += int(args[0].shape[0])

    def _post(self, *_):
        if self.timed:
            self.seconds += self.device.timer() - self._t0
        self.calls += 1

    def reset(self) -> None:
        self.calls, self.seconds = 0, 0.0
        self.by_side, self.samples_by_side = Counter(), Counter()

    def close(self) -> None:
        for h in self._hooks:
            h.remove()


def unet_inputs(spec: dict, side: int, batch: int, device, dtype):
    """UNet forward arguments (x, timesteps, context, y) as the sampler passes them (cond+uncond = batch 2)."""
    import torch

    x = torch.zeros(batch, 4, side, side, device=device, dtype=dtype)
    t = torch.full((batch,), 500.0, device=device)
    ctx = torch.zeros(batch, tokens(spec), spec["context"], device=device, dtype=dtype)
    y = torch.zeros(batch, spec["unet"]["adm_in_channels"], device=device, dtype=dtype) \
        if spec["unet"].get("adm_in_channels") else None
    return x, t, ctx, y


def flops_per_call(spec: dict, sides: list[int], batch: int = 2) -> dict[int, float]:
    """FLOPs of one UNet forward at each latent side (torch's FlopCounterMode on the meta device: no memory,
    no weights). Attention is ComfyUI's SDPA path (``attention_pytorch``, what it uses on CUDA) for the
    count: the CPU's memory-aware fallbacks ask the device for free memory, which meta cannot answer."""
    import comfy.ldm.modules.attention as attention
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    patcher = build_model(spec, "meta", dtype=torch.float32)
    unet = patcher.model.diffusion_model
    out = {}
    saved = attention.optimized_attention, attention.optimized_attention_masked
    attention.optimized_attention = attention.optimized_attention_masked = attention.attention_pytorch
    try:
        for side in sides:
            x, t, ctx, y = unet_inputs(spec, side, batch, "meta", torch.float32)
            with torch.no_grad(), FlopCounterMode(display=False) as fc:
                unet(x, t, context=ctx, y=y)
            out[side] = float(fc.get_total_flops())
    finally:
        attention.optimized_attention, attention.optimized_attention_masked = saved
    return out
