"""SelfCascadeRenoise: diffuse a pivot latent to the paper's step K (Eq. 6) and give the remaining SIGMAS.

Also the shared schedule and validation helpers that SelfCascadeStage uses.
"""
from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from ..upsampler.renoise import DEFAULT_K, T_STEPS, latent_gain, per_sample_noise, remaining_sigmas, renoise, sigma_at_k
from .common import CATEGORY, SelfCascadeError
from .pivot import check_latent

logger = logging.getLogger(__name__)

K_TOOLTIP = ("The paper's K: the timestep (out of 1000) the upsampled pivot is diffused back to before "
             "denoising K -> 0. 700 = the paper's default (about denoise 0.7: of 50 'normal' steps 36 run). "
             "Lower keeps more of the pivot, higher lets the model change more. Must lie in (0, 1000). Mapped with "
             "the model's own schedule (flow models: the point K/1000 of the way through it).")
STEPS_TOOLTIP = ("Length of the WHOLE schedule from pure noise to 0. Only the part from K down to 0 runs "
                 "(50 steps at K=700 execute 35-36 depending on the scheduler, as in the paper) - unlike KSampler's "
                 "'denoise', which keeps the executed count fixed. Executed / steps is the denoise equivalent.")
SEED_TOOLTIP = ("Noise seed. Batch entry i uses its own generator seeded with seed + batch_index[i] (seed + i "
                "without a batch_index), so a batch of 3 equals three single runs with seeds s, s+1, s+2. "
                "This differs from KSampler, which draws the whole batch from one generator.")


def model_sampling_of(model):
    """The model's ``model_sampling`` object (honours ModelSamplingDiscrete/SD3/Flux patch nodes)."""
    return model.get_model_object("model_sampling")


def check_k_input(k: float, name: str = "K") -> float:
    """K as float, or a SelfCascadeError naming the input."""
    if not (0.0 < float(k) < T_STEPS):
        raise SelfCascadeError(f"'{name}' = {k} is outside (0, {T_STEPS}). K is a timestep out of {T_STEPS} "
                               f"(paper default {DEFAULT_K:g}); choose a value strictly between 0 and {T_STEPS}.")
    return float(k)


def check_choice(value: str, options, name: str) -> str:
    """``value`` if it is one of ``options``, else a SelfCascadeError naming the input."""
    if value not in options:
        raise SelfCascadeError(f"'{name}' = {value!r} is not available; choose one of {', '.join(map(str, options))}.")
    return value


def check_steps(steps: int) -> int:
    if int(steps) < 1:
        raise SelfCascadeError(f"'steps' = {steps}: the schedule needs at least 1 step; use e.g. 50.")
    return int(steps)


def model_latent(model, latent: dict, name: str = "latent") -> torch.Tensor:
    """The LATENT's samples, checked against the model (channels), empty latents fixed as core KSampler does."""
    import comfy.sample

    samples = check_latent(latent, name)
    if getattr(samples, "is_nested", False):
        raise SelfCascadeError(f"'{name}' is a nested (multi-part) latent; Self-Cascade supports plain image/video latents.")
    samples = comfy.sample.fix_empty_latent_channels(model, samples)
    want = model.get_model_object("latent_format").latent_channels
    if samples.shape[1] != want:
        raise SelfCascadeError(
            f"'{name}' has {samples.shape[1]} channels but the model expects {want}. Feed a latent made for this "
            "model (same VAE family), e.g. the output of a KSampler that used this model.")
    return samples


def cascade_sigmas(model, k: float, steps: int, scheduler: str) -> tuple[float, torch.Tensor]:
    """(sigma_K, remaining sigmas): the model's ``scheduler`` over ``steps`` cut at K (Eq. 6's step K)."""
    import comfy.samplers

    ms = model_sampling_of(model)
    sigma_k = sigma_at_k(ms, check_k_input(k))
    full = comfy.samplers.calculate_sigmas(ms, scheduler, check_steps(steps))
    return sigma_k, remaining_sigmas(full, sigma_k)


def batch_index_of(latent: dict, batch: int) -> list[int] | None:
    """The LATENT's ``batch_index`` (as set by core batch nodes) if it matches the batch size."""
    index = latent.get("batch_index")
    if index is None:
        return None
    index = [int(i) for i in index]
    if len(index) != batch:
        logger.warning("Self-Cascade: ignoring batch_index of length %d for a batch of %d", len(index), batch)
        return None
    return index


def renoise_latent(model, latent: dict, k: float, noise_seed: int, steps: int, scheduler: str) -> tuple[dict, torch.Tensor]:
    """The node's work: a LATENT at step K for a sampler with noise disabled, and the remaining sigmas."""
    import comfy.samplers

    check_choice(scheduler, comfy.samplers.SCHEDULER_NAMES, "scheduler")
    samples = model_latent(model, latent)
    sigma_k, sigmas = cascade_sigmas(model, k, steps, scheduler)
    ms = model_sampling_of(model)
    base = model.model
    noise = per_sample_noise(samples.shape, noise_seed, batch_index_of(latent, samples.shape[0]), dtype=samples.dtype)
    latent_in = base.process_latent_in(samples)
    x_k = renoise(ms, latent_in, noise, sigma_k)  # Eq. 6 in the sampler's coordinates
    # ComfyUI's sampler re-applies noise_scaling(sigma_K, 0, latent) = a * latent; undo it here.
    out_samples = base.process_latent_out(x_k / latent_gain(ms, sigma_k, x_k))
    out = {key: v for key, v in latent.items() if key != "samples"}
    out["samples"] = out_samples
    logger.debug("Self-Cascade renoise: K=%s sigma_K=%.4f executes %d of %d steps", k, sigma_k, len(sigmas) - 1, steps)
    return out, sigmas


class SelfCascadeRenoise(io.ComfyNode):
    """Eq. 6 as a composable node: pivot -> z_K plus the sigmas from K to 0 for SamplerCustom."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        import comfy.samplers

        return io.Schema(
            node_id="SelfCascadeRenoise",
            display_name="Self-Cascade Renoise (to step K)",
            category=CATEGORY,
            description="Diffuse an upsampled pivot latent to the paper's step K (Eq. 6) with the model's own "
                        "noise schedule (eps, v-prediction and flow models). Feed both outputs to SamplerCustom / "
                        "SamplerCustomAdvanced with add_noise DISABLED to denoise from K to 0.",
            inputs=[
                io.Model.Input("model", tooltip="The model that will denoise; its model_sampling defines sigma at K."),
                io.Latent.Input("latent", tooltip="The pivot: the previous stage's result upsampled "
                                                  "(e.g. the output of Self-Cascade Pivot Upsample)."),
                io.Float.Input("K", default=DEFAULT_K, min=1.0, max=999.0, step=1.0, tooltip=K_TOOLTIP),
                io.Int.Input("noise_seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip=SEED_TOOLTIP),
                io.Int.Input("steps", default=50, min=1, max=10000, tooltip=STEPS_TOOLTIP),
                io.Combo.Input("scheduler", options=list(comfy.samplers.SCHEDULER_NAMES), default="normal",
                               tooltip="Scheduler of the whole schedule; the SIGMAS output is its part from K to 0."),
            ],
            outputs=[
                io.Latent.Output(display_name="latent", tooltip="The pivot diffused to step K. Sample it with "
                                                               "add_noise disabled and the SIGMAS output."),
                io.Sigmas.Output(display_name="sigmas", tooltip="The remaining schedule: sigma at K, then every "
                                                               "scheduled sigma below it, down to 0."),
            ],
        )

    @classmethod
    def execute(cls, model, latent, K, noise_seed, steps, scheduler) -> io.NodeOutput:
        out, sigmas = renoise_latent(model, latent, K, noise_seed, steps, scheduler)
        return io.NodeOutput(out, sigmas)


NODES = (SelfCascadeRenoise,)
