"""Cost of the tuning-free Self-Cascade chain vs direct sampling at the target size (a benchmark, not a test).

Both rows use the same sampler, scheduler, cfg, seed and step budget (``--steps`` = the whole schedule
of every sampling call), in one process, measured side by side. The chain is base sampling at the base
size followed by ``cascade_stage`` calls (each runs only the part of the schedule from K to 0), as the
SelfCascadeStage node runs it. The paper's TF figure is 1.04x direct inference.

Columns: wall time, its ratio to direct, UNet forward calls, time inside the UNet forward, overhead
(wall - UNet time: everything that is not the denoising steps themselves) and peak device memory
(CUDA only; n/a on the CPU).

    python benchmark/cost.py                      # small CPU UNet, 64 -> 128 -> 256 px, 20 steps
    python benchmark/cost.py --quick              # seconds, for the smoke test
    python benchmark/cost.py --real-size sdxl --device cuda   # real-size SDXL UNet (random weights),
                                                              # 1024 -> 2048 -> 4096 px

Rows live in the ``ROWS`` registry; other parts register theirs with :func:`row` (e.g. the tuned chain).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: Model specs: comfy.supported_models class name, UNet config, base size in pixels, pooled text width.
TINY_UNET = dict(image_size=32, in_channels=4, out_channels=4, model_channels=32, num_res_blocks=[1, 1],
                 channel_mult=[1, 2], transformer_depth=[1, 1], transformer_depth_output=[1, 1, 1, 1],
                 transformer_depth_middle=1, context_dim=32, use_linear_in_transformer=False,
                 adm_in_channels=None, use_spatial_transformer=True, legacy=False,
                 use_temporal_attention=False, use_temporal_resblock=False)
SD15_UNET = dict(image_size=64, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[2, 2, 2, 2],
                 channel_mult=[1, 2, 4, 4], transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0],
                 transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], transformer_depth_middle=1,
                 context_dim=768, use_linear_in_transformer=False, adm_in_channels=None,
                 use_spatial_transformer=True, legacy=False, use_temporal_attention=False,
                 use_temporal_resblock=False)
SDXL_UNET = dict(image_size=128, in_channels=4, out_channels=4, model_channels=320, num_res_blocks=[2, 2, 2],
                 channel_mult=[1, 2, 4], transformer_depth=[0, 0, 2, 2, 10, 10],
                 transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], transformer_depth_middle=10,
                 context_dim=2048, use_linear_in_transformer=True, adm_in_channels=2816, num_classes="sequential",
                 use_spatial_transformer=True, legacy=False, use_temporal_attention=False,
                 use_temporal_resblock=False)
SPECS = {
    "tiny": dict(family="SD15", unet=TINY_UNET, base=64, context=32, pooled=0, heads=dict(num_heads=-1, num_head_channels=8)),
    "quick": dict(family="SD15", unet=TINY_UNET, base=32, context=32, pooled=0, heads=dict(num_heads=-1, num_head_channels=8)),
    "sd15": dict(family="SD15", unet=SD15_UNET, base=512, context=768, pooled=0, heads={}),
    "sdxl": dict(family="SDXL", unet=SDXL_UNET, base=1024, context=2048, pooled=1280, heads={}),
}


@dataclass
class Bench:
    """Everything a row needs; rows return the final latent."""
    model: object
    positive: list
    negative: list
    base_px: int
    stages: int
    steps: int
    cfg: float
    sampler: str
    scheduler: str
    K: float
    seed: int
    batch: int
    extra: dict = field(default_factory=dict)

    def size(self, stage: int) -> int:
        """Latent side at stage ``stage`` (0 = base)."""
        return self.base_px * 2 ** stage // 8


#: name -> function(Bench) -> latent tensor. The first row is the reference (ratio 1).
ROWS: dict[str, Callable[[Bench], object]] = {}


def row(name: str):
    """Register a benchmark row (decorator)."""
    def deco(fn):
        ROWS[name] = fn
        return fn
    return deco


def _sample_full(b: Bench, side: int):
    """Core KSampler's path (comfy.sample.sample, denoise 1) at a square latent of ``side``."""
    import comfy.sample
    import torch

    empty = torch.zeros(b.batch, 4, side, side)
    noise = comfy.sample.prepare_noise(empty, b.seed)
    return comfy.sample.sample(b.model, noise, b.steps, b.cfg, b.sampler, b.scheduler, b.positive, b.negative,
                               empty, disable_pbar=True, seed=b.seed)


@row("direct")
def direct(b: Bench):
    """Direct inference at the target size: the whole schedule, ``steps`` steps."""
    return _sample_full(b, b.size(b.stages))


def _settings(b: Bench):
    """One x2-per-side stage with the bench's seed, sampler and K."""
    from self_cascade.nodes.cascade import StageSettings

    return StageSettings(scale=2.0, upscale_method="bicubic", seed=b.seed, steps=b.steps, cfg=b.cfg,
                         sampler_name=b.sampler, scheduler=b.scheduler, K=b.K)


@row("tf_cascade")
def tf_cascade(b: Bench):
    """Tuning-free Self-Cascade: base sampling, then ``stages`` x cascade_stage (x2 per side, K -> 0)."""
    from self_cascade.nodes.cascade import cascade_stage

    latent = {"samples": _sample_full(b, b.size(0))}
    for _ in range(b.stages):
        latent = cascade_stage(b.model, b.positive, b.negative, latent, _settings(b), disable_pbar=True)
    return latent["samples"]


@row("t_cascade")
def t_cascade(b: Bench):
    """Tuned Self-Cascade: tf_cascade with freshly initialised light upsamplers (cost only; B's patch)."""
    from self_cascade.nodes.cascade import cascade_stage
    from self_cascade.nodes.patch import model_family
    from self_cascade.upsampler.modules import UpsamplerSet
    from self_cascade.upsampler.taps import derive_taps, emb_dim

    unet = b.model.get_model_object("diffusion_model")
    uset = UpsamplerSet.create(derive_taps(unet), emb_dim(unet), model_family(b.model), "light")
    latent = {"samples": _sample_full(b, b.size(0))}
    for _ in range(b.stages):
        latent = cascade_stage(b.model, b.positive, b.negative, latent, _settings(b), uset, disable_pbar=True)
    return latent["samples"]


def build_model(spec: dict, device: str, seed: int = 0):
    """A real ComfyUI BaseModel/ModelPatcher of ``spec`` with seeded random weights (no downloads)."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models
    import torch

    config = getattr(comfy.supported_models, spec["family"])(dict(spec["unet"]))
    config.unet_config.update(spec["heads"])
    dtype = torch.bfloat16 if device == "cuda" else torch.float32  # bf16: random weights overflow less
    config.set_inference_dtype(dtype, None)
    dev = torch.device(device)
    model = config.get_model({}, device=dev)
    g = torch.Generator(device=dev).manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.diffusion_model.named_parameters()):
            if p.ndim >= 2:
                p.copy_(torch.randn(p.shape, generator=g, device=dev, dtype=torch.float32) * (0.5 / p[0].numel()) ** 0.5)
            elif name.endswith("weight"):
                p.fill_(1.0)
            else:
                p.zero_()
        model.diffusion_model.out[-1].weight.mul_(0.1)
    model.diffusion_model.eval()
    return comfy.model_patcher.ModelPatcher(model, load_device=comfy.model_management.get_torch_device(),
                                            offload_device=comfy.model_management.unet_offload_device())


def conditioning(spec: dict, batch: int, seed: int = 1) -> list:
    import torch

    g = torch.Generator().manual_seed(seed)
    extra = {"pooled_output": torch.randn(batch, spec["pooled"], generator=g)} if spec["pooled"] else {}
    return [[torch.randn(batch, 77 if spec["context"] > 32 else 8, spec["context"], generator=g), extra]]


class UnetMeter:
    """Counts UNet forward calls and the time spent inside them (forward hooks; no model change)."""

    def __init__(self, unet, cuda: bool):
        import torch

        self.calls, self.seconds, self._t0, self._cuda = 0, 0.0, 0.0, cuda
        self._sync = torch.cuda.synchronize if cuda else (lambda: None)
        self._hooks = [unet.register_forward_pre_hook(self._pre), unet.register_forward_hook(self._post)]

    def _pre(self, *_):
        self._sync()
        self._t0 = time.perf_counter()

    def _post(self, *_):
        self._sync()
        self.seconds += time.perf_counter() - self._t0
        self.calls += 1

    def reset(self):
        self.calls, self.seconds = 0, 0.0

    def close(self):
        for h in self._hooks:
            h.remove()


def measure(b: Bench, names: list[str], repeats: int, cuda: bool) -> list[dict]:
    """Run each row ``repeats`` times (interleaved), keep the median wall time; returns result dicts."""
    import torch

    meter = UnetMeter(b.model.model.diffusion_model, cuda)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    try:
        for _ in range(repeats):
            for n in names:
                meter.reset()
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                t0 = time.perf_counter()
                out = ROWS[n](b)
                if cuda:
                    torch.cuda.synchronize()
                runs[n].append(dict(name=n, wall_s=time.perf_counter() - t0, calls=meter.calls, unet_s=meter.seconds,
                                    shape=tuple(out.shape), finite=bool(torch.isfinite(out).all()),
                                    peak_mb=torch.cuda.max_memory_allocated() / 2 ** 20 if cuda else float("nan")))
    finally:
        meter.close()
    results = {}
    for n, rs in runs.items():  # the repeat with the median wall time, all its figures together
        r = sorted(rs, key=lambda r: r["wall_s"])[(len(rs) - 1) // 2]
        r["overhead_s"] = r["wall_s"] - r["unet_s"]
        r["walls"] = [x["wall_s"] for x in rs]
        results[n] = r
    ref = results[names[0]]
    for r in results.values():
        r["ratio"] = r["wall_s"] / ref["wall_s"]
        r["mem_ratio"] = r["peak_mb"] / ref["peak_mb"] if cuda else float("nan")
    return list(results.values())


def table(results: list[dict]) -> str:
    lines = ["| row | wall s | x direct | UNet calls | UNet s | overhead s | peak MB | x mem | out shape |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['name']} | {r['wall_s']:.3f} | {r['ratio']:.3f} | {r['calls']} | {r['unet_s']:.3f} | "
                     f"{r['overhead_s']:.3f} | {r['peak_mb']:.0f} | {r['mem_ratio']:.3f} | {r['shape']} |")
    return "\n".join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--real-size", choices=["sd15", "sdxl"], help="real-size UNet with random weights")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes and 4 steps (smoke test)")
    p.add_argument("--steps", type=int, default=None, help="whole-schedule length (default 20; 4 with --quick)")
    p.add_argument("--base-px", type=int, default=None,
                   help="override the base size in pixels (multiple of 8; e.g. a CPU check of a real-size UNet)")
    p.add_argument("--stages", type=int, default=2, help="cascade stages after the base (2 = 3-stage chain)")
    p.add_argument("--cfg", type=float, default=5.0)
    p.add_argument("--sampler", default="euler")
    p.add_argument("--scheduler", default="normal")
    p.add_argument("--K", type=float, default=700.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per row (median; default 3, 1 real-size)")
    p.add_argument("--budget-minutes", type=float, default=6.0,
                   help="real-size only: lower --steps so the timed runs fit (calibrated by a 1-step run)")
    p.add_argument("--threads", type=int, default=1,
                   help="CPU torch threads (1: on a shared 2-core machine 2 threads spin and time erratically)")
    p.add_argument("--rows", default=",".join(ROWS), help="comma-separated rows; the first is the reference")
    return p.parse_args(argv)


def setup_host(device: str, threads: int) -> None:
    """ComfyUI in-process on ``device`` with the pack importable as ``self_cascade``."""
    sys.path.insert(0, str(REPO / "dev"))
    import hostenv

    hostenv.prepare_in_process()
    import comfy.cli_args

    comfy.cli_args.args.cpu = device == "cpu"
    hostenv.load_pack()
    import torch

    if device == "cpu":
        torch.set_num_threads(threads)


def run(argv=None) -> list[dict]:
    """Parse, build, warm up, measure; prints the table and returns the results."""
    args = parse_args(argv)
    setup_host(args.device, args.threads)
    key = args.real_size or ("quick" if args.quick else "tiny")
    spec = SPECS[key]
    steps = args.steps or (4 if args.quick else 20)
    repeats = args.repeats or (1 if args.real_size else 3)
    names = [n.strip() for n in args.rows.split(",") if n.strip()]
    unknown = [n for n in names if n not in ROWS]
    if unknown:
        raise SystemExit(f"unknown rows {unknown}; registered: {list(ROWS)}")
    t_build = time.perf_counter()
    model = build_model(spec, args.device, seed=args.seed)
    cond, uncond = conditioning(spec, args.batch, 1), conditioning(spec, args.batch, 2)
    base_px = args.base_px or spec["base"]
    b = Bench(model, cond, uncond, base_px, args.stages, steps, args.cfg, args.sampler, args.scheduler,
              args.K, args.seed, args.batch)
    print(f"model {key} ({sum(p.numel() for p in model.model.diffusion_model.parameters()) / 1e6:.1f} M params, "
          f"{args.device}) built in {time.perf_counter() - t_build:.1f}s")
    # warm-up (kernels, allocator, model load) and, for real sizes, a step budget that fits the time limit
    t1 = time.perf_counter()
    ROWS[names[0]](Bench(**{**b.__dict__, "steps": 1}))
    one_step = time.perf_counter() - t1
    if args.real_size:
        per_step = one_step  # a 1-step direct run at the target, warm-up included: an over-estimate
        fit = math.floor(args.budget_minutes * 60 / (repeats * len(names) * 1.2 * per_step))
        if fit < steps:
            print(f"1 step at the target took {per_step:.1f}s: lowering steps {steps} -> {max(4, fit)} "
                  f"to fit {args.budget_minutes} min")
            b.steps = steps = max(4, fit)
    for n in names[1:]:
        ROWS[n](Bench(**{**b.__dict__, "steps": 2}))
    px = [base_px * 2 ** i for i in range(args.stages + 1)]
    print(f"{' -> '.join(f'{p}px' for p in px)}, batch {args.batch}, {steps} steps {args.sampler}/{args.scheduler}, "
          f"cfg {args.cfg}, K {args.K:g}, {repeats} repeat(s), median wall time")
    results = measure(b, names, repeats, args.device == "cuda")
    print(table(results))
    return results


if __name__ == "__main__":
    run()
