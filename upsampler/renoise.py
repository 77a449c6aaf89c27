"""Pivot replacement maths (Eq. 6): diffuse the upsampled pivot to step K, keep the rest of the schedule.

Eq. 6 of the paper: z_K ~ N(sqrt(abar_K) * up(z0_prev), (1 - abar_K) I), then denoise K -> 0 at
the new size. Everything here is duck-typed on a ComfyUI ``model_sampling`` object (it needs
``noise_scaling``), so one implementation serves eps, v-prediction and
flow (CONST) models; nothing here imports ComfyUI.

- K is given the paper's way, a timestep out of 1000; the node layer maps it to ``sigma_K``
  (``nodes/timesteps.py``, one place for every timestep <-> sigma mapping) and passes sigmas here.
- ``noise_scaling`` is Eq. 6 in ComfyUI's coordinates: eps/v models keep the latent in a
  variance-exploding space (x0 + sigma*eps), which after ``calculate_input`` (divide by
  sqrt(1 + sigma^2)) is exactly sqrt(abar)*x0 + sqrt(1 - abar)*eps with abar = 1/(1 + sigma^2);
  flow models use (1 - sigma)*x0 + sigma*eps directly.
"""
from __future__ import annotations

import torch

#: The paper's number of training timesteps; K is a timestep on this scale.
T_STEPS = 1000
#: Default K (paper: K = 700 of T = 1000).
DEFAULT_K = 700.0
#: Relative gap below which a schedule sigma counts as a duplicate of sigma_K (no zero-length step).
DUPLICATE_RTOL = 1e-5


def remaining_sigmas(full: torch.Tensor, sigma_k: float) -> torch.Tensor:
    """``[sigma_K]`` followed by every sigma of the full schedule strictly below it (near-duplicates dropped).

    ``full`` is the whole schedule (descending, ending at 0). The executed steps are
    ``len(result) - 1``: 50 'normal' steps at K=700 keep about 35, the paper's count.
    """
    full = full.detach().float().cpu()
    tail = full[full < sigma_k * (1.0 - DUPLICATE_RTOL)]
    return torch.cat([torch.tensor([sigma_k], dtype=torch.float32), tail])


def renoise(model_sampling, latent_in: torch.Tensor, noise: torch.Tensor, sigma_k: float) -> torch.Tensor:
    """Eq. 6: the pivot ``latent_in`` (already ``process_latent_in``-scaled) diffused to sigma_K.

    Returns a new tensor in the sampler's coordinates (eps/v: x0 + sigma*eps; flow:
    (1 - sigma)*x0 + sigma*eps); the inputs are not modified.
    """
    sigma = torch.tensor(sigma_k, dtype=torch.float32, device=latent_in.device)
    return model_sampling.noise_scaling(sigma, noise.to(latent_in), latent_in.clone(), max_denoise=False)


def latent_gain(model_sampling, sigma_k: float, like: torch.Tensor) -> torch.Tensor:
    """How ComfyUI's sampler scales a latent when it starts at sigma_K with zero noise.

    ComfyUI always calls ``noise_scaling(sigmas[0], noise, latent)``, also with noise disabled;
    that multiplies the latent by a = noise_scaling(sigma_K, 0, 1) (1 for eps/v, 1 - sigma for
    flow). A renoised latent handed to a sampler with noise off must be divided by ``a`` first.
    """
    sigma = torch.tensor(sigma_k, dtype=torch.float32, device=like.device)
    ones = torch.ones((1,) * like.ndim, dtype=like.dtype, device=like.device)
    return model_sampling.noise_scaling(sigma, torch.zeros_like(ones), ones, max_denoise=False)


def signal_to_noise(model_sampling, sigma_k: float) -> float:
    """Signal-to-noise ratio of Eq. 6's z_K at sigma_K in the model's own coordinates.

    ``noise_scaling`` mixes x = a * x0 + b * eps (eps/v: a = 1, b = sigma; flow: a = 1 - sigma, b = sigma),
    so SNR = (a / b)^2: abar / (1 - abar) for the paper's DDPM form (Eq. 6). Infinite at sigma_K = 0.
    """
    sigma = torch.tensor([float(sigma_k)], dtype=torch.float64)
    one, zero = torch.ones(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    a = float(model_sampling.noise_scaling(sigma, zero, one, max_denoise=False))
    b = float(model_sampling.noise_scaling(sigma, one, zero, max_denoise=False))
    return float("inf") if b == 0.0 else (a / b) ** 2


def sample_seeds(seed: int, batch: int, batch_index: list[int] | None = None) -> list[int]:
    """Seed of each batch entry: ``seed + batch_index[i]`` (``range(batch)`` when no index), mod 2**64."""
    index = list(range(batch)) if batch_index is None else [int(i) for i in batch_index]
    if len(index) != batch:
        raise ValueError(f"batch_index has {len(index)} entries for a batch of {batch}")
    return [(int(seed) + i) % (1 << 64) for i in index]


def per_sample_noise(shape: tuple[int, ...], seed: int, batch_index: list[int] | None = None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal noise, each batch entry from its own CPU generator seeded by :func:`sample_seeds`.

    So entry i of a batch equals a batch-1 run with seed ``seed + i``, whatever the batch size.
    """
    shape = tuple(shape)
    out = torch.empty(shape, dtype=torch.float32)
    for i, s in enumerate(sample_seeds(seed, shape[0], batch_index)):
        g = torch.Generator(device="cpu").manual_seed(s)
        out[i] = torch.randn(shape[1:], generator=g, dtype=torch.float32)
    return out.to(dtype)
