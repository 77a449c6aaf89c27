"""Time on the paper's axis: a timestep t of T = 1000 <-> the model's sigma and raw timestep.

The one place where the pack turns the paper's timesteps (K = 700, upsamplers on while t > 100,
training timesteps t in (end_timestep, K]) into what a ComfyUI ``model_sampling`` object speaks.
Every function is duck-typed on ``model_sampling`` (eps/v discrete, flow with shift, Flux, ...).

Convention. The paper counts T = 1000 DDPM timesteps; t = 0 is clean, t = T - 1 the noisiest.

- :func:`model_timestep` gives the raw timestep the diffusion model receives at paper timestep t.
  Discrete (eps/v) models: the DDPM index itself (raw = t). Flow models (SD3-style, raw =
  sigma * multiplier): raw = t * multiplier / T. Others: the raw timestep at the point t/T of the
  schedule. :func:`timestep_sigma` is the sigma there. The upsampler gate (``nodes/patch.py``)
  compares the model's raw timesteps with ``model_timestep(end_timestep)``; training draws t and
  uses ``timestep_sigma``.
- :func:`schedule_sigma` gives sigma at the point t/T of the way through the model's schedule,
  ComfyUI's own ``percent_to_sigma(1 - t/T)`` (the convention of ComfyUI's start/end-percent
  nodes). K uses it, so K = 700 with 50 'normal' steps executes the paper's 35-36 steps.

For flow models the two agree exactly (``schedule_sigma(t) == timestep_sigma(t)``). For discrete
models ``percent_to_sigma`` spans the indices 0..999 with 999 intervals, so
``schedule_sigma(t) == timestep_sigma(t * 999 / 1000)``: K = 700 lands at index 699.3 (0.7 of a
timestep, about 0.3% in sigma below index 700). Both sides are kept as they were for SD models
(saved results stay reproducible); the difference is pinned by tests/test_renoise.py.
"""
from __future__ import annotations

import functools
import logging

import torch

from ..upsampler.renoise import T_STEPS, remaining_sigmas, signal_to_noise

logger = logging.getLogger(__name__)

__all__ = ["K_MODES", "T_STEPS", "cascade_sigmas", "equal_snr_k", "model_sampling_of", "model_timestep",
           "resolve_k", "schedule_sigma", "timestep_sigma"]

#: How a node reads its K: "fixed" = on the connected model's own schedule (as always); "auto" = in
#: SD1.x's units, converted to the connected model's K with the same pivot signal-to-noise.
K_MODES = ("fixed", "auto")
#: Bisection steps of :func:`equal_snr_k` (the interval 0..1000 halves each time: 50 steps reach 1e-12).
_BISECT_STEPS = 50


def model_sampling_of(model):
    """The model's ``model_sampling`` object (honours ModelSamplingDiscrete/SD3/Flux patch nodes)."""
    return model.get_model_object("model_sampling")


def schedule_sigma(model_sampling, t: float) -> float:
    """Sigma at the point t/T of the model's schedule: ``percent_to_sigma(1 - t/T)`` (Eq. 6's step K)."""
    return float(model_sampling.percent_to_sigma(1.0 - float(t) / T_STEPS))


def _is_discrete_index(model_sampling) -> bool:
    """True for ComfyUI's discrete schedules whose raw timestep is the DDPM index (0..num_timesteps-1)."""
    from comfy.model_sampling import ModelSamplingDiscrete

    return isinstance(model_sampling, ModelSamplingDiscrete) and \
        type(model_sampling).timestep is ModelSamplingDiscrete.timestep


def _raw_per_timestep(model_sampling) -> float | None:
    """Raw timestep units per paper timestep where the raw axis is linear in t, else None."""
    if _is_discrete_index(model_sampling):
        return model_sampling.num_timesteps / T_STEPS
    multiplier = getattr(model_sampling, "multiplier", None)
    return float(multiplier) / T_STEPS if isinstance(multiplier, (int, float)) else None


def model_timestep(model_sampling, t: float) -> float:
    """The raw timestep the diffusion model receives at the paper's timestep ``t`` (see the module doc)."""
    scale = _raw_per_timestep(model_sampling)
    if scale is not None:
        return float(t) * scale
    return float(model_sampling.timestep(torch.tensor(schedule_sigma(model_sampling, t))))


def timestep_sigma(model_sampling, t: float | torch.Tensor) -> torch.Tensor:
    """Sigma at the paper's timestep(s) ``t``: ``model_sampling.sigma(model_timestep(t))``, float32, t's shape."""
    t = torch.as_tensor(t, dtype=torch.float32)
    scale = _raw_per_timestep(model_sampling)
    if scale is not None:
        raw = t * scale if scale != 1.0 else t
    else:
        raw = torch.tensor([model_timestep(model_sampling, float(v)) for v in t.flatten()]).view(t.shape)
    return model_sampling.sigma(raw).float()


def cascade_sigmas(model, k: float, steps: int, scheduler: str) -> tuple[float, torch.Tensor]:
    """(sigma_K, remaining sigmas): the model's ``scheduler`` over ``steps`` cut at K (Eq. 6's step K).

    ``k`` and ``steps`` are assumed checked (``nodes/checks.py``).
    """
    import comfy.samplers

    ms = model_sampling_of(model)
    sigma_k = schedule_sigma(ms, k)
    full = comfy.samplers.calculate_sigmas(ms, scheduler, int(steps))
    return sigma_k, remaining_sigmas(full, sigma_k)


@functools.lru_cache(maxsize=1)
def _sd1_sampling():
    """SD1.x's schedule (ComfyUI's ModelSamplingDiscrete defaults: scaled-linear betas 0.00085..0.012, eps)."""
    from comfy.model_sampling import EPS, ModelSamplingDiscrete

    class SD1Sampling(ModelSamplingDiscrete, EPS):
        pass

    return SD1Sampling()


def equal_snr_k(model_sampling, k: float, reference=None) -> float:
    """The K whose pivot signal-to-noise on ``model_sampling`` equals ``reference``'s at ``k`` (SD1.x by default).

    Both sides map K through their own schedule (:func:`schedule_sigma`, as the stage does) and measure
    Eq. 6's SNR with the model's own ``noise_scaling`` (``upsampler.renoise.signal_to_noise``). SNR falls
    as K grows on every schedule, so a bisection over (0, 1000) finds it; rounded to 0.01.
    """
    reference = _sd1_sampling() if reference is None else reference
    target = signal_to_noise(reference, schedule_sigma(reference, k))
    lo, hi = 0.0, float(T_STEPS)
    for _ in range(_BISECT_STEPS):
        mid = 0.5 * (lo + hi)
        if signal_to_noise(model_sampling, schedule_sigma(model_sampling, mid)) > target:
            lo = mid
        else:
            hi = mid
    return round(0.5 * (lo + hi), 2)


def resolve_k(model, k: float, mode: str, name: str = "K") -> float:
    """The K a node uses: ``k`` itself ("fixed") or :func:`equal_snr_k` on the model ("auto"), logged.

    ``k`` is assumed checked (``nodes/checks.py``); the converted K is kept inside the widget range 1..999.
    """
    from .checks import check_choice

    if check_choice(mode, K_MODES, "K_mode") == "fixed":
        return float(k)
    auto = equal_snr_k(model_sampling_of(model), k)
    used = min(max(auto, 1.0), float(T_STEPS - 1))
    if used != auto:
        logger.warning("Self-Cascade: %s = %g (auto) needs %g on this model, outside 1..%d; using %g.",
                       name, k, auto, T_STEPS - 1, used)
    logger.info("Self-Cascade: %s = %g in SD1.x units (K_mode auto) -> %g on this model's schedule (same pivot "
                "signal-to-noise).", name, k, used)
    return used
