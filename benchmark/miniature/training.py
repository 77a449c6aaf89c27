"""The benchmark's trained rows, each with snapshots at a list of step budgets (steps-to-quality).

- T: the pack's own training core (``train_upsamplers``) on high-res renders; snapshots by
  resuming the same run (its checkpoint) up to each budget, so every snapshot is a prefix of one run.
- Full fine-tuning: every weight of (a copy of) the base UNet, trained at the target size with
  ComfyUI's own training loop (``comfy_extras.nodes_train.TrainSampler``: x0-MSE, uniform timesteps).
- LoRA: ComfyUI's own LoRA trainer (``TrainLoraNode.execute``: ``comfy.weight_adapter`` LoRA on every
  matrix plus bias/norm diffs, applied through ModelPatcher weight wrappers), unchanged. Snapshots:
  for the duration of the call ``torch.optim.AdamW`` is a subclass that copies its parameters after
  each budget's step (training itself is untouched); a snapshot is evaluated by copying it back
  into the returned patched model's LoRA parameters.

Every trained row gets the same step budgets, batch size and number of training images. ComfyUI's
training loop evaluates every conditioning of a batch on the whole batch (batch x batch forward
passes), so full fine-tuning and LoRA run batch 1 with ``batch`` gradient-accumulation steps per
optimiser step: the same samples per step, without that waste.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import torch

from . import model as bm
from . import scenes

T_SCENES_SEED, FT_SCENES_SEED = 777, 779


def t_images(n: int, base: int = scenes.BASE_SHORT_SIDE) -> list[torch.Tensor]:
    """Training renders for the upsamplers: n at 2x and n at 4x the base side (crops of 2x base)."""
    return [scenes.render(scenes.sample_scenes(n, T_SCENES_SEED), 2 * base, 2 * base),
            scenes.render(scenes.sample_scenes(n, T_SCENES_SEED + 1), 4 * base, 4 * base)]


def t_captions(n: int) -> torch.Tensor:
    """Captions of ``t_images(n)``'s renders, in the same order (2n, scenes.CAPTION_DIM)."""
    return torch.cat([scenes.captions(scenes.sample_scenes(n, T_SCENES_SEED)),
                      scenes.captions(scenes.sample_scenes(n, T_SCENES_SEED + 1))])


#: Training recipes of T (name: pivot mode, (end_timestep, K) of the training timesteps t ~ U{end+1..K}).
RECIPES = {"gt/K": ("downsample", (100.0, 700.0)), "gt/all": ("downsample", (0.0, 999.0)),
           "gen/K": ("generated", (100.0, 700.0)), "gen/all": ("generated", (0.0, 999.0))}


def ft_latents(n: int, hw: tuple[int, int]) -> torch.Tensor:
    """Training latents for full fine-tuning / LoRA at the target size (2n renders: T's image count)."""
    aspect = hw[1] / hw[0]
    return scenes.to_latent(scenes.render(scenes.sample_scenes(2 * n, FT_SCENES_SEED, aspect), *hw))


def ft_captions(n: int, hw: tuple[int, int], dropout: float = 0.0, seed: int = 0) -> torch.Tensor:
    """Captions of ``ft_latents(n, hw)``'s renders, in order; a fixed ``dropout`` share of them null for
    the whole run (ComfyUI's trainer has no caption dropout; T's core draws it per step instead)."""
    caps = scenes.captions(scenes.sample_scenes(2 * n, FT_SCENES_SEED, hw[1] / hw[0]))
    caps[torch.rand(len(caps), generator=torch.Generator().manual_seed(seed)) < dropout] = 0.0
    return caps


def caption_conds(n_images: int, dropout: float, cfg: float) -> tuple[list, Callable[[tuple], list], dict]:
    """Training conditionings on the captioned model: T's CONDITIONING per image (``t_images``), FT/LoRA's
    conditioning list at a target size (one entry per ``ft_latents`` image), and ``train_t``'s keywords
    (the null caption for dropout and as the negative of generated pivots at ``cfg``)."""
    t_pos = [bm.caption_cond(c[None]) for c in t_captions(n_images)]

    def ft_pos(hw: tuple) -> list:
        return [bm.caption_cond(c[None])[0] for c in ft_captions(n_images, hw, dropout)]

    kw = {"empty": bm.caption_cond(torch.zeros(1, scenes.CAPTION_DIM)), "caption_dropout": dropout,
          "generated_cfg": cfg}
    return t_pos, ft_pos, kw


def fresh_set(model, variant: str = "light", size: int = 32, seed: int = 0):
    """An untrained set exactly as ``train_upsamplers`` initialises one (zero last conv: nearest x2 features)."""
    from ...nodes.patch import check_unet, model_family
    from ...upsampler.modules import UpsamplerSet
    from ...upsampler.taps import derive_taps, emb_dim

    unet = check_unet(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        uset = UpsamplerSet.create(derive_taps(unet), emb_dim(unet), model_family(model), variant, size,
                                   K=700.0, end_timestep=100.0, scale=2.0)
    return uset.eval().requires_grad_(False)


def train_t(model, pos, budgets: list[int], *, n_images: int, lr: float, batch: int, variant: str,
            variant_size: int, workdir, save_path=None, recipe: str = "gt/K", empty=None,
            caption_dropout: float = 0.0, generated_cfg: float = 1.0) -> tuple[dict, dict]:
    """{step: UpsamplerSet} for each budget (one run, resumed), and a training summary. ``recipe``
    (RECIPES): pivot mode and training timesteps; ``pos`` one CONDITIONING or one per training
    image; ``empty`` the null conditioning (caption dropout, and the negative of generated pivots
    at ``generated_cfg``)."""
    from ...nodes.training import TrainConfig, train_upsamplers

    b = scenes.BASE_SHORT_SIDE
    imgs = t_images(n_images)
    path = str(workdir / "t_upsamplers.safetensors")
    snaps, losses, t0, res = {}, [], time.perf_counter(), None
    pivot_mode, (end_t, k_t) = RECIPES[recipe]
    for steps in sorted(budgets):
        cfg = TrainConfig(width=2 * b, height=2 * b, scale=2.0, steps=steps, learning_rate=lr, batch_size=batch,
                          K=k_t, end_timestep=end_t, pivot_mode=pivot_mode, variant=variant,
                          variant_size=variant_size, seed=0, checkpoint_every=0, latent_cell=1,
                          log_every=max(1, max(budgets) // 10), caption_dropout=caption_dropout,
                          generated_cfg=generated_cfg)
        res = train_upsamplers(model, imgs, scenes.to_latent, pos, config=cfg, save_path=path, resume=True,
                               empty=empty)
        if res.steps_done != steps or res.stopped_reason != "completed":
            raise RuntimeError(f"T training stopped at {res.steps_done}/{steps}: {res.stopped_reason}")
        snaps[steps] = res.upsamplers
        losses = res.losses
    if save_path is not None:
        from ...upsampler.fileformat import save_upsamplers

        save_upsamplers(str(save_path), res.upsamplers)
    info = {"method": f"pack train_upsamplers (Algorithm 1, v target, pivot {pivot_mode}, t in ({end_t:g}, {k_t:g}])",
            "recipe": recipe, "caption_dropout": caption_dropout, "steps": max(budgets),
            "seconds": round(time.perf_counter() - t0, 1), "variant": variant, "variant_size": variant_size,
            "lr": lr, "batch": batch, "images": 2 * n_images, "params": res.upsamplers.num_params(),
            "loss_first10": _mean(losses[:10]), "loss_last10": _mean(losses[-10:])}
    return snaps, info


class _SnapshotAdamW(torch.optim.AdamW):
    """AdamW that records a copy of its parameters after each step in ``budgets`` (observation only)."""

    budgets: set[int] = set()
    snapshots: dict[int, list[torch.Tensor]] = {}

    def __init__(self, params, *a, **k):
        super().__init__(params, *a, **k)
        self._n = 0

    def step(self, closure=None):
        out = super().step(closure)
        self._n += 1
        if self._n in self.budgets:
            type(self).snapshots[self._n] = [p.detach().clone() for g in self.param_groups for p in g["params"]]
        return out


@contextlib.contextmanager
def _snapshotting_adamw(budgets: list[int]):
    cls = type("SnapshotAdamW", (_SnapshotAdamW,), {"budgets": set(budgets), "snapshots": {}})
    orig = torch.optim.AdamW
    torch.optim.AdamW = cls
    try:
        yield cls
    finally:
        torch.optim.AdamW = orig


def _comfy_train(mp, latents: torch.Tensor, pos, optimizer, steps: int, batch: int, seed: int, losses: list) -> None:
    """ComfyUI's training loop (TrainSampler under a basic guider) on ``latents`` (latent space)."""
    import comfy_extras.nodes_custom_sampler as ncs
    import comfy_extras.nodes_train as nt

    n = latents.shape[0]
    # batch 1 x ``batch`` accumulation steps, as ``train_lora`` (see there): one optimiser step per ``batch`` samples
    sampler = nt.TrainSampler(torch.nn.MSELoss(), optimizer, loss_callback=losses.append, batch_size=1,
                              grad_acc=batch, total_steps=steps * batch, seed=seed, training_dtype=torch.float32)
    guider = ncs.Guider_Basic(mp)
    guider.set_conds(pos * n)
    noise = ncs.Noise_RandomNoise(seed)
    with torch.inference_mode(False):
        guider.sample(noise.generate_noise({"samples": latents}), latents, sampler, torch.tensor(range(n)),
                      seed=noise.seed)


def train_full(weights, pos, budgets: list[int], *, hw: tuple[int, int], n_images: int, lr: float, batch: int,
               seed: int = 0) -> tuple[object, dict, dict]:
    """Full fine-tuning of a copy of the base UNet at ``hw``: (patcher, {step: state_dict}, summary)."""
    mp = bm.load_base_model(weights)
    net = mp.model.diffusion_model
    net.requires_grad_(True)
    latents = ft_latents(n_images, hw)
    losses, t0 = [], time.perf_counter()
    with _snapshotting_adamw(budgets) as opt_cls:
        torch.manual_seed(seed)
        opt = opt_cls(list(net.parameters()), lr=lr)
        _comfy_train(mp, latents, pos, opt, max(budgets), batch, seed, losses)
        names = [k for k, _ in net.named_parameters()]
        snaps = {s: dict(zip(names, v, strict=True)) for s, v in opt_cls.snapshots.items()}
    net.requires_grad_(False)
    info = {"method": "full fine-tuning, ComfyUI TrainSampler (x0 MSE, uniform t), AdamW", "steps": max(budgets),
            "seconds": round(time.perf_counter() - t0, 1), "lr": lr, "batch": batch, "images": latents.shape[0],
            "size": list(hw), "params": sum(p.numel() for p in net.parameters()),
            "loss_first10": _mean(losses[:10]), "loss_last10": _mean(losses[-10:])}
    return mp, snaps, info


def load_full_snapshot(mp, state: dict) -> None:
    mp.model.diffusion_model.load_state_dict(state, strict=False)


def train_lora(weights, pos, budgets: list[int], *, hw: tuple[int, int], n_images: int, lr: float, batch: int,
               rank: int = 8, seed: int = 0) -> tuple[object, dict, dict]:
    """ComfyUI's TrainLoraNode at ``hw``: (patched model, {step: [param tensors]}, summary)."""
    from comfy_extras.nodes_train import TrainLoraNode

    model = bm.load_base_model(weights)  # its own copy: the LoRA wrappers never touch the shared base
    latents = ft_latents(n_images, hw)
    t0 = time.perf_counter()
    with _snapshotting_adamw(budgets) as opt_cls:
        torch.manual_seed(seed)
        out = TrainLoraNode.execute(
            # one dict per image: with a single LATENT input this ComfyUI version's trainer fails
            model=[model], latents=[{"samples": x[None]} for x in latents], positive=[pos], batch_size=[1],
            steps=[max(budgets)], grad_accumulation_steps=[batch], learning_rate=[lr], rank=[rank], optimizer=["AdamW"],
            loss_function=["MSE"], seed=[seed], training_dtype=["fp32"], lora_dtype=["fp32"], algorithm=["LoRA"],
            gradient_checkpointing=[False], existing_lora=["[None]"])
        snaps = dict(opt_cls.snapshots)
    mp, lora_sd, loss_map, _ = out.result
    params = list(lora_sd.values())
    if any(len(v) != len(params) for v in snaps.values()):
        raise RuntimeError("LoRA snapshot does not match the trainer's parameter list")
    mp._benchmark_lora_params = params
    losses = loss_map["loss"]
    info = {"method": "ComfyUI TrainLoraNode (lora, x0 MSE, uniform t), AdamW", "steps": max(budgets),
            "seconds": round(time.perf_counter() - t0, 1), "lr": lr, "batch": batch, "rank": rank,
            "images": latents.shape[0], "size": list(hw), "params": sum(p.numel() for p in params),
            "loss_first10": _mean(losses[:10]), "loss_last10": _mean(losses[-10:])}
    return mp, snaps, info


def load_lora_snapshot(mp, values: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, v in zip(mp._benchmark_lora_params, values, strict=True):
            p.copy_(v)


def _mean(xs) -> float:
    xs = [float(x) for x in xs]
    return round(sum(xs) / len(xs), 5) if xs else float("nan")
