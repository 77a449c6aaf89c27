"""The training loop of Algorithm 1, driven the way ComfyUI core drives training (its nodes_train.py):
a ``comfy.samplers.Sampler`` whose ``sample`` runs the optimisation inside ``CFGGuider.sample``.

That puts every forward on ComfyUI's real sampling path -- model loading, ``process_conds``
(SDXL's ADM ``y`` from the latent size), every wrapper and transformer patch of the patched
clone, ``sampling_function`` -> ``calc_cond_batch`` -> ``BaseModel.apply_model`` -- exactly the
path inference takes, so training and inference cannot disagree about the upsampler patch.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch

from ..timesteps import timestep_sigma
from .pairs import Batch
from .parallel import Parallel

logger = logging.getLogger(__name__)


# --- loss targets (Algorithm 1: epsilon MSE; the matching target for other parameterisations) ---

def output_and_target(ms, xt: torch.Tensor, denoised: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor):
    """(the network's raw output, the output that would have given ``x0``): ComfyUI's ``calculate_denoised``
    is affine in the output, D(out) = a + b * out, so both come from inverting it with ``ms``'s own formula.
    EPS: (x_t - D) / sigma against the noise epsilon of Algorithm 1; CONST (flow): the velocity noise - x0;
    V_PREDICTION: Salimans & Ho's v = alpha * eps - sigma * x0 in k-diffusion form."""
    zero = torch.zeros_like(xt)
    a = ms.calculate_denoised(sigma, zero, xt)  # D with a zero output: the skip part c_skip * x_t
    b = ms.calculate_denoised(sigma, torch.ones_like(xt), zero)  # the output's weight c_out
    return (denoised - a) / b, (x0 - a) / b


def loss_target(model_sampling) -> Callable:
    """The (output, target) function for the model's sampling type, or a clear error (EDM is not supported)."""
    import comfy.model_sampling as cms

    if not isinstance(model_sampling, cms.EDM) and isinstance(model_sampling, (cms.V_PREDICTION, cms.EPS, cms.CONST)):
        return output_and_target
    from ..common import SelfCascadeError

    raise SelfCascadeError(f"training is not supported for {type(model_sampling).__name__} models "
                           "(supported: eps, v-prediction and flow models).")


def replace_inference_tensors(module: torch.nn.Module) -> int:
    """Swap parameters/buffers created under ``torch.inference_mode`` (ComfyUI loads models inside
    it) for equal normal tensors: autograd may not save inference tensors for backward. Values are
    bit-identical and the old tensors are released, so memory does not grow. Returns the count."""
    count = 0
    with torch.inference_mode(False), torch.no_grad():
        for sub in module.modules():
            for store in (sub._parameters, sub._buffers):
                for name, t in list(store.items()):
                    if t is not None and t.is_inference():
                        new = t.clone()
                        store[name] = torch.nn.Parameter(new, requires_grad=False) if store is sub._parameters else new
                        count += 1
    return count


# --- one training run inside CFGGuider.sample -------------------------------------------------

@dataclass
class LoopState:
    """What the loop mutates and a checkpoint captures."""

    step: int
    losses: list[float] = field(default_factory=list)
    stopped_reason: str = "running"


class UpsamplerTrainingSampler:
    """A ComfyUI Sampler (duck-typed: ``sample(model_wrap, sigmas, extra_args, ...)``) whose run
    is the whole training loop. Data, checkpoints and interrupts come in as callables.

    Each step trains this process's rows of the global batch (``parallel.rows``); the rows are
    grouped by conditioning (one forward per group, gradients accumulated), each group's loss
    weighted by its share of the global batch times the process count, so that the gradient
    average over processes equals the one-process gradient of the whole batch.
    """

    def __init__(self, *, total_steps: int, state: LoopState, next_batch: Callable[[], Batch],
                 set_pivot: Callable[[torch.Tensor], None], optimizer: torch.optim.Optimizer,
                 trained: torch.nn.Module, autocast_dtype: torch.dtype | None,
                 on_step: Callable[[LoopState], None], check_interrupt: Callable[[], None],
                 on_exception: Callable[[LoopState, BaseException], None], cond_slices: list[list[int]],
                 parallel: Parallel | None = None):
        self.cond_slices = cond_slices
        self.total_steps = total_steps
        self.state = state
        self.next_batch = next_batch
        self.set_pivot = set_pivot
        self.optimizer = optimizer
        self.params = list(trained.parameters())
        self.parallel = parallel or Parallel()
        self.forward = self.parallel.wrap(trained)
        self.autocast_dtype = autocast_dtype
        self.on_step = on_step
        self.check_interrupt = check_interrupt
        self.on_exception = on_exception

    def _group_loss(self, model_wrap, extra_args, conds_all, batch: Batch, rows: list[int], target_fn) -> torch.Tensor:
        """Loss of the rows that share one conditioning, on ComfyUI's own predict path."""
        ms = model_wrap.inner_model.model_sampling
        device = model_wrap.model_patcher.load_device
        x0 = batch.x0[rows].to(device)
        self.set_pivot(batch.pivot[rows].to(device))
        sigma = timestep_sigma(ms, batch.timesteps[rows]).cpu().to(device)
        noise = batch.noise[rows].to(device)
        xt = ms.noise_scaling(sigma, noise, x0, False)
        model_wrap.conds["positive"] = [conds_all[j] for j in self.cond_slices[batch.cond_index[rows[0]]]]
        if self.autocast_dtype is not None:
            with torch.autocast(device.type, dtype=self.autocast_dtype):
                denoised = model_wrap(xt, sigma, **extra_args)
        else:
            denoised = model_wrap(xt, sigma, **extra_args)
        pred, target = target_fn(ms, xt.float(), denoised.float(), x0.float(), sigma.float())
        return torch.nn.functional.mse_loss(pred, target)

    def _step(self, model_wrap, extra_args, conds_all, target_fn) -> float:
        """Forward and backward of this process's rows; returns the global batch's loss."""
        batch = self.next_batch()
        n = batch.x0.shape[0]
        groups: dict[int, list[int]] = {}
        for row in self.parallel.rows(n):
            groups.setdefault(batch.cond_index[row], []).append(row)
        self.optimizer.zero_grad(set_to_none=True)
        local = 0.0
        for k, rows in enumerate(groups.values()):
            last = k == len(groups) - 1
            with nullcontext() if last else self.parallel.no_sync(self.forward):
                loss = self.forward(lambda rows=rows: self._group_loss(model_wrap, extra_args, conds_all, batch,
                                                                       rows, target_fn))
                (loss * (len(rows) * self.parallel.world_size / n)).backward()
            local += float(loss.detach()) * len(rows) / n
        return self.parallel.all_sum(local)

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        swapped = replace_inference_tensors(model_wrap.inner_model)
        if swapped:
            logger.info("Self-Cascade training: %d inference-mode tensors of the base model replaced by equal "
                        "normal tensors (needed for backward; values unchanged).", swapped)
        conds_all = list(model_wrap.conds["positive"])
        target_fn = loss_target(model_wrap.inner_model.model_sampling)
        st = self.state
        try:
            while st.step < self.total_steps:
                self.check_interrupt()
                total = self._step(model_wrap, extra_args, conds_all, target_fn)
                grads_ok = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in self.params)
                if not math.isfinite(total) or not grads_ok:
                    st.stopped_reason = (f"non-finite loss ({total}) at step {st.step + 1}" if not math.isfinite(total)
                                         else f"non-finite gradient at step {st.step + 1}")
                    logger.error("Self-Cascade training: %s; stopping without applying it.", st.stopped_reason)
                    self.optimizer.zero_grad(set_to_none=True)
                    break
                self.optimizer.step()
                st.step += 1
                st.losses.append(total)
                self.on_step(st)
            else:
                st.stopped_reason = "completed"
        except BaseException as exc:
            self.on_exception(st, exc)
            raise
        finally:
            self.optimizer.zero_grad(set_to_none=True)
        return torch.zeros_like(latent_image)


def training_guider(model_patcher, conds: list):
    """ComfyUI's CFGGuider over ``model_patcher`` with only positive conds and cfg 1 (Algorithm 1 has no CFG)."""
    import comfy.samplers

    guider = comfy.samplers.CFGGuider(model_patcher)
    guider.inner_set_conds({"positive": conds})
    guider.set_cfg(1.0)
    return guider
