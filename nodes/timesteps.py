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

import torch

from ..upsampler.renoise import T_STEPS, remaining_sigmas

__all__ = ["T_STEPS", "cascade_sigmas", "model_sampling_of", "model_timestep", "schedule_sigma", "timestep_sigma"]


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
