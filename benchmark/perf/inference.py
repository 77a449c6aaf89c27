"""Inference rows, side by side in one process: same model, seed, sampler, scheduler, cfg and ``steps``.

Every row returns the final latent at the target size (no VAE: latents only). ``steps`` is the whole
schedule's length in every sampling call; a row that runs part of it (hires fix, the cascade stages)
executes that part only, so the UNet call counts differ and are reported.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from .models import Device, UnetMeter

#: Deep Shrink (ComfyUI core ``PatchModelAddDownscale``): its default block and end percent; the
#: downscale factor is the target/base ratio per side (the base model's native size inside the UNet).
DEEP_SHRINK = dict(block_number=3, start_percent=0.0, end_percent=0.35, downscale_after_skip=True,
                   downscale_method="bicubic", upscale_method="bicubic")


@dataclass
class Bench:
    """Everything a row needs. ``stages``: x2-per-side stages after the base (2 = base -> x2 -> x4)."""
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
    batch: int = 1
    hires_denoise: float = 0.5
    upsamplers: dict = field(default_factory=dict)  # variant -> UpsamplerSet
    cache: dict = field(default_factory=dict)  # opt-in rows' prepared models (shared by with_steps copies)

    def size(self, stage: int) -> int:
        """Latent side at stage ``stage`` (0 = base)."""
        return self.base_px * 2 ** stage // 8

    def with_steps(self, steps: int) -> Bench:
        return Bench(**{**self.__dict__, "steps": steps})


#: name -> (function(Bench) -> latent, one-line description for --help and the table).
ROWS: dict[str, tuple[Callable[[Bench], object], str]] = {}
#: experimental rows, run only when named in --rows; their one-off set-up on CUDA (seconds, for the budget)
OPT_IN = {"tf_cudagraph": 5.0, "tf_compile_cudagraphs": 60.0, "tf_compile": 180.0}


def row(name: str, doc: str):
    """Register an inference row (decorator). The first registered row is the reference (ratio 1)."""
    def deco(fn):
        ROWS[name] = (fn, doc)
        return fn
    return deco


def _sample_full(b: Bench, side: int, model=None):
    """Core KSampler's path (comfy.sample.sample, denoise 1) at a square latent of ``side``."""
    import comfy.sample
    import torch

    empty = torch.zeros(b.batch, 4, side, side)
    noise = comfy.sample.prepare_noise(empty, b.seed)
    return comfy.sample.sample(model or b.model, noise, b.steps, b.cfg, b.sampler, b.scheduler, b.positive,
                               b.negative, empty, disable_pbar=True, seed=b.seed)


@row("direct", "direct sampling at the target size, the whole schedule (the reference)")
def direct(b: Bench):
    return _sample_full(b, b.size(b.stages))


@row("hires_fix", "hires fix: base, then per stage latent x2 (bicubic) and the last hires_denoise of the "
                  "same schedule (A1111's convention: denoise 0.5 executes half the steps)")
def hires_fix(b: Bench):
    import comfy.sample
    import comfy.samplers
    import comfy.utils

    samples = _sample_full(b, b.size(0))
    sigmas = comfy.samplers.calculate_sigmas(b.model.get_model_object("model_sampling"), b.scheduler, b.steps)
    tail = sigmas[b.steps - max(1, round(b.steps * b.hires_denoise)):]
    for _ in range(b.stages):
        up = comfy.utils.common_upscale(samples, samples.shape[-1] * 2, samples.shape[-2] * 2, "bicubic", "disabled")
        noise = comfy.sample.prepare_noise(up, b.seed)
        samples = comfy.sample.sample_custom(b.model, noise, b.cfg, comfy.samplers.sampler_object(b.sampler), tail,
                                             b.positive, b.negative, up, disable_pbar=True, seed=b.seed)
    return samples


@row("deep_shrink", "Deep Shrink (ComfyUI core PatchModelAddDownscale: block 3, factor target/base per side, "
                    "until 35% of the schedule), direct at the target")
def deep_shrink(b: Bench):
    from comfy_extras.nodes_model_downscale import PatchModelAddDownscale

    kw = dict(DEEP_SHRINK, downscale_factor=float(2 ** b.stages))
    patched = PatchModelAddDownscale.execute(b.model, **kw).result[0]
    return _sample_full(b, b.size(b.stages), patched)


def _settings(b: Bench):
    from self_cascade.nodes.cascade import StageSettings

    return StageSettings(scale=2.0, upscale_method="bicubic", seed=b.seed, steps=b.steps, cfg=b.cfg,
                         sampler_name=b.sampler, scheduler=b.scheduler, K=b.K)


def _cascade(b: Bench, upsamplers=None, model=None):
    from self_cascade.nodes.cascade import cascade_stage

    model = model or b.model
    latent = {"samples": _sample_full(b, b.size(0), model)}
    for _ in range(b.stages):
        latent = cascade_stage(model, b.positive, b.negative, latent, _settings(b), upsamplers, disable_pbar=True)
    return latent["samples"]


def _prepared(b: Bench, key: str, make):
    """An opt-in row's model, made once per Bench (its warm-up run pays captures / compiles)."""
    if key not in b.cache:
        b.cache[key] = make()
    return b.cache[key]


@row("tf_cascade", "tuning-free Self-Cascade: base, then per stage cascade_stage (x2 per side, K -> 0)")
def tf_cascade(b: Bench):
    return _cascade(b)


@row("t_official", "tuned Self-Cascade with the official-size upsampler set (fresh weights: cost only)")
def t_official(b: Bench):
    return _cascade(b, b.upsamplers["official"])


@row("t_light", "tuned Self-Cascade with the light upsampler set (fresh weights: cost only)")
def t_light(b: Bench):
    return _cascade(b, b.upsamplers["light"])


@row("tf_cudagraph", "EXPERIMENTAL, opt-in: tf_cascade with the UNet forward at latents <= 128 per side replayed "
                     "from CUDA graphs (benchmark/perf/graphs.py; eager elsewhere and on the CPU)")
def tf_cudagraph(b: Bench):
    from .graphs import graphed

    return _cascade(b, model=_prepared(b, "cudagraph", lambda: graphed(b.model)[0]))


def _compiled(b: Bench, backend: str):
    from comfy_extras.nodes_torch_compile import TorchCompileModel

    return _prepared(b, f"compile_{backend}", lambda: TorchCompileModel.execute(b.model, backend=backend).result[0])


@row("tf_compile_cudagraphs", "EXPERIMENTAL, opt-in: tf_cascade on ComfyUI core's TorchCompileModel, backend "
                              "cudagraphs (compiled in the warm-up run)")
def tf_compile_cudagraphs(b: Bench):
    return _cascade(b, model=_compiled(b, "cudagraphs"))


@row("tf_compile", "EXPERIMENTAL, opt-in: tf_cascade on ComfyUI core's TorchCompileModel, backend inductor "
                   "(compiled in the warm-up run: minutes)")
def tf_compile(b: Bench):
    return _cascade(b, model=_compiled(b, "inductor"))


def default_rows() -> list[str]:
    return [name for name in ROWS if name not in OPT_IN]


def make_upsamplers(model) -> dict:
    """Freshly initialised official and light sets for ``model`` (cost does not depend on the weights)."""
    from self_cascade.nodes.patch import model_family
    from self_cascade.upsampler.modules import UpsamplerSet
    from self_cascade.upsampler.taps import derive_taps, emb_dim

    unet = model.get_model_object("diffusion_model")
    return {v: UpsamplerSet.create(derive_taps(unet), emb_dim(unet), model_family(model), v)
            for v in ("official", "light")}


def run_row(b: Bench, name: str, meter: UnetMeter, device: Device) -> dict:
    """One timed run of ``name``: wall time (device-synchronised), UNet calls per latent side, peak memory."""
    import torch

    meter.reset()
    device.reset_peak()
    t0 = device.timer()
    out = ROWS[name][0](b)
    wall = device.timer() - t0
    return dict(name=name, wall_s=wall, calls=meter.calls, unet_s=meter.seconds,
                calls_by_side={f"{h}x{w}": n for (h, w), n in sorted(meter.by_side.items())},
                samples_by_side={f"{h}x{w}": n for (h, w), n in sorted(meter.samples_by_side.items())},
                shape=list(out.shape), finite=bool(torch.isfinite(out).all()), peak_mib=device.peak_mib())


def summarise(results: list[dict], ref: str = "direct") -> None:
    """Add ratios to the reference row (in place): wall, memory, and overhead (wall - time inside the UNet)."""
    refs = [r for r in results if r["name"] == ref and "wall_s" in r]
    for r in results:
        if "wall_s" not in r:
            continue
        r["overhead_s"] = r["wall_s"] - r["unet_s"] if r["unet_s"] else float("nan")
        r["ratio"] = r["wall_s"] / refs[0]["wall_s"] if refs else float("nan")
        r["mem_ratio"] = r["peak_mib"] / refs[0]["peak_mib"] if refs else float("nan")


def ideal_ratio(row_calls: dict, ref_calls: dict, cost_per_call: dict) -> float:
    """The limit of a row's time ratio from its executed UNet work alone: sum(count x cost) over the sizes,
    relative to the reference's. ``cost_per_call``: 'HxW' -> FLOPs or measured seconds (per call, or per
    batch row when the counts are batch rows)."""
    def total(calls):
        return sum(n * cost_per_call[side] for side, n in calls.items())
    return total(row_calls) / total(ref_calls)


def time_per_call(model, spec: dict, sides: list[int], device: Device, repeats: int = 2) -> dict[str, float]:
    """Measured seconds of one plain UNet forward (batch 2: cond + uncond) at each latent side, after a
    warm-up call; the same forward the sampler makes, outside the sampler."""
    import torch

    from .models import unet_inputs

    unet = model.model.diffusion_model
    dev = next(unet.parameters()).device
    dtype = model.model.get_dtype()
    out = {}
    with torch.no_grad():
        for side in sides:
            x, t, ctx, y = unet_inputs(spec, side, 2, dev, dtype)
            unet(x, t, context=ctx, y=y)  # warm-up (kernels, allocator)
            t0 = device.timer()
            for _ in range(repeats):
                unet(x, t, context=ctx, y=y)
            out[f"{side}x{side}"] = (device.timer() - t0) / repeats
    return out


def median_run(runs: list[dict]) -> dict:
    """The run with the median wall time (all its figures together), with every run's wall time."""
    r = dict(sorted(runs, key=lambda r: r["wall_s"])[(len(runs) - 1) // 2])
    r["walls"] = [x["wall_s"] for x in runs]
    return r


def median_of(fn: Callable[[], dict], repeats: int) -> dict:
    """Run ``fn`` ``repeats`` times and keep the run with the median wall time."""
    return median_run([fn() for _ in range(repeats)])
