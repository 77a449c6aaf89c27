"""SelfCascadeRenoise: diffuse a pivot latent to the paper's step K (Eq. 6) and give the remaining SIGMAS."""
from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from ..upsampler.renoise import latent_gain, per_sample_noise, renoise
from .checks import batch_index_of, check_choice, check_k, check_steps, model_latent
from .common import CATEGORY, DEFAULT_K, K_MAX, K_MIN, K_TOOLTIP, SEED_MAX, SEED_TOOLTIP, STEPS_MAX, STEPS_TOOLTIP
from .compat import schema
from .stage_inputs import k_mode_input
from .timesteps import cascade_sigmas, model_sampling_of, resolve_k

logger = logging.getLogger(__name__)

__all__ = ["NODES", "cascade_sigmas", "renoise_latent"]


def renoise_latent(model, latent: dict, k: float, noise_seed: int, steps: int, scheduler: str,
                   k_mode: str = "fixed") -> tuple[dict, torch.Tensor]:
    """The node's work: a LATENT at step K for a sampler with noise disabled, and the remaining sigmas.

    ``k_mode`` "auto" reads ``k`` in SD1.x's units (``nodes.timesteps.resolve_k``)."""
    import comfy.samplers

    check_choice(scheduler, comfy.samplers.SCHEDULER_NAMES, "scheduler")
    samples = model_latent(model, latent)
    k = resolve_k(model, check_k(k), k_mode)
    sigma_k, sigmas = cascade_sigmas(model, k, check_steps(steps), scheduler)
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

        return schema(
            node_id="SelfCascadeRenoise",
            display_name="Self-Cascade Renoise (to step K)",
            category=CATEGORY,
            search_aliases=["add noise", "renoise", "partial denoise", "hires fix"],
            description="Adds just enough noise to an upsampled latent that a sampler can redraw its detail at "
                        "the new size: use it to build a Self-Cascade stage by hand from Pivot Upsample and "
                        "SamplerCustom (Self-Cascade Stage does all of it in one node). It diffuses the pivot to "
                        "the paper's step K (Eq. 6) with the model's own noise schedule (eps, v-prediction and "
                        "flow models). Feed both outputs to SamplerCustom / SamplerCustomAdvanced with add_noise "
                        "DISABLED to denoise from K to 0.",
            inputs=[
                io.Model.Input("model", tooltip="The model that will denoise; its model_sampling defines sigma at K."),
                io.Latent.Input("latent", tooltip="The pivot: the previous stage's result upsampled "
                                                  "(e.g. the output of Self-Cascade Pivot Upsample)."),
                io.Float.Input("K", default=DEFAULT_K, min=K_MIN, max=K_MAX, step=1.0, tooltip=K_TOOLTIP),
                io.Int.Input("noise_seed", default=0, min=0, max=SEED_MAX, control_after_generate=True,
                             tooltip=SEED_TOOLTIP),
                io.Int.Input("steps", default=50, min=1, max=STEPS_MAX, tooltip=STEPS_TOOLTIP),
                io.Combo.Input("scheduler", options=list(comfy.samplers.SCHEDULER_NAMES), default="normal",
                               tooltip="Scheduler of the whole schedule; the SIGMAS output is its part from K to 0."),
                k_mode_input(),
            ],
            outputs=[
                io.Latent.Output(display_name="latent", tooltip="The pivot diffused to step K. Sample it with "
                                                               "add_noise disabled and the SIGMAS output."),
                io.Sigmas.Output(display_name="sigmas", tooltip="The remaining schedule: sigma at K, then every "
                                                               "scheduled sigma below it, down to 0."),
            ],
        )

    @classmethod
    def execute(cls, model, latent, K, noise_seed, steps, scheduler, K_mode="fixed") -> io.NodeOutput:
        out, sigmas = renoise_latent(model, latent, K, noise_seed, steps, scheduler, K_mode)
        return io.NodeOutput(out, sigmas)


NODES = (SelfCascadeRenoise,)
