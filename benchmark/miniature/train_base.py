"""Train the benchmark's base model (seeded, reproducible on the same torch/CPU) on procedural scenes.

    .host/venv/bin/python benchmark/train_base.py --steps 2500 --out benchmark/weights/base.safetensors

V-prediction (or eps, model.PREDICTION) DDPM objective on ComfyUI's own schedule (model_sampling of
the BaseModel, SD1.5 betas), on data scaled by the model's latent format (``process_latent_in``:
x LATENT_SCALE, std about 1 as in SD's latent space), t uniform over 0..999, AdamW with warm-up + cosine decay, EMA of the weights (the EMA is
what is saved). 3 of 4 steps train on 16x16 scenes, 1 of 4 on 16x24 or 24x16, so that the
non-square base size is in-distribution. ``--caption``: the captioned model (model.py), trained
on each scene's caption (shape and colour class) with ``--caption-dropout`` of them replaced by the
null caption (what cfg > 1 needs as its negative); ``--init`` may then be unconditional weights
(the class embedding starts at zero, i.e. at that model). Base size: scenes.BASE_SHORT_SIDE (16 px short side). Checkpoints are written atomically every
``--save-every`` steps (a partial run is usable), with a JSON log next to them.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch

from . import model as bm
from . import scenes


def make_data(seed: int, n_square: int, n_rect: int, base: int = scenes.BASE_SHORT_SIDE) -> tuple[dict, dict]:
    """Pre-rendered training sets (model latents in -1..1) and their captions, both keyed by (H, W)."""
    long = base * 3 // 2
    ph = scenes.STRIPE_PHASE  # the same stripe phase as evaluation renders
    data, caps = {}, {}
    for hw, n, s, aspect in (((base, base), n_square, seed, 1.0), ((base, long), n_rect, seed + 1, 1.5),
                             ((long, base), n_rect, seed + 2, 1 / 1.5)):
        sc = scenes.sample_scenes(n, s, aspect=aspect)
        data[hw], caps[hw] = scenes.to_latent(scenes.render(sc, *hw, phase=ph)), scenes.captions(sc)
    return data, caps


def _save_atomic(state: dict, path: Path, meta: dict) -> None:
    import safetensors.torch

    tmp = path.with_suffix(".tmp")
    safetensors.torch.save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(tmp),
                                metadata={k: str(v) for k, v in meta.items()})
    os.replace(tmp, path)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ema", type=float, default=0.998)
    ap.add_argument("--n-square", type=int, default=8192)
    ap.add_argument("--n-rect", type=int, default=1536)
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=bm.WEIGHTS)
    ap.add_argument("--data-cache", type=Path, default=None, help="optional .pt cache of the rendered data")
    ap.add_argument("--init", type=Path, default=None, help="start from these weights (safetensors) instead of "
                    "the seeded random init")
    ap.add_argument("--caption", action="store_true", help="train the captioned model (shape and colour class)")
    ap.add_argument("--caption-dropout", type=float, default=0.1, help="share of captions replaced by the null one")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    t0 = time.time()
    model = bm.build_model(args.seed, caption=args.caption)
    net = model.diffusion_model.train()
    if args.init is not None:
        import safetensors.torch

        init = safetensors.torch.load_file(str(args.init))
        missing, unexpected = net.load_state_dict(init, strict=False)
        if unexpected or any(not k.startswith("label_emb.") for k in missing):
            raise SystemExit(f"--init does not fit this model: missing {missing}, unexpected {unexpected}")
    ms = model.model_sampling
    sigmas = ms.sigmas.float()
    if args.data_cache is not None and args.data_cache.exists():
        data, caps = torch.load(args.data_cache, weights_only=True)
    else:
        data, caps = make_data(args.seed, args.n_square, args.n_rect)
        if args.data_cache is not None:
            torch.save((data, caps), args.data_cache)
    data_std = float(torch.cat([model.process_latent_in(v).flatten() for v in data.values()]).std())
    print(f"params {bm.param_count(model)}; data rendered in {time.time() - t0:.1f}s; "
          f"data std in the sampler's space {data_std:.3f}", flush=True)

    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=0.01)
    warm = min(100, args.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, args.steps) / args.steps))))
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    g = torch.Generator().manual_seed(args.seed + 1000)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    log_path = args.out.with_suffix(".log.json")
    log = {"seed": args.seed, "args": {k: str(v) for k, v in vars(args).items()}, "prediction": bm.PREDICTION,
           "latent_scale": bm.LATENT_SCALE, "data_std_sampler_space": round(data_std, 4),
           "torch": torch.__version__, "threads": args.threads, "caption": args.caption, "loss": []}
    run_loss, t_train = None, time.time()
    for step in range(1, args.steps + 1):
        keys = list(data)
        key = keys[0] if step % 4 else keys[1 + (step // 4) % 2]
        pool = data[key]
        idx = torch.randint(0, pool.shape[0], (args.batch,), generator=g)
        x0 = model.process_latent_in(pool[idx])  # the sampler's space (x LATENT_SCALE)
        flip = torch.rand(args.batch, generator=g) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        t = torch.randint(0, len(sigmas), (args.batch,), generator=g)
        noise = torch.randn(x0.shape, generator=g)
        sigma = sigmas[t][:, None, None, None]
        xc = (x0 + noise * sigma) / torch.sqrt(sigma * sigma + 1)  # ComfyUI's EPS calculate_input
        y = None
        if args.caption:  # the scene's caption, or the null caption (zeros) for a --caption-dropout share
            keep = torch.rand(args.batch, generator=g) >= args.caption_dropout
            y = caps[key][idx] * keep[:, None]
        pred = net(xc, t.float(), context=None, y=y)
        # ComfyUI's V_PREDICTION: denoised = x/(s^2+1) - out*s/sqrt(s^2+1) with x = x0 + s*eps,
        # so the target is (eps - s*x0)/sqrt(s^2+1); EPS: the noise itself.
        target = (noise - sigma * x0) / torch.sqrt(sigma * sigma + 1) if bm.PREDICTION == "v" else noise
        loss = torch.nn.functional.mse_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        d = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in net.state_dict().items():
                ema[k].mul_(d).add_(v.detach(), alpha=1 - d) if v.dtype.is_floating_point else ema[k].copy_(v)
        run_loss = loss.item() if run_loss is None else 0.98 * run_loss + 0.02 * loss.item()
        if step % 10 == 0:
            log["loss"].append([step, round(loss.item(), 5), round(run_loss, 5)])
        if step % 50 == 0 or step == 1:
            print(f"step {step} loss {loss.item():.4f} avg {run_loss:.4f} "
                  f"{(time.time() - t_train) / step:.2f}s/step", flush=True)
        if step % args.save_every == 0 or step == args.steps:
            meta = {"step": step, "seed": args.seed, "loss_avg": round(run_loss, 5),
                    "wall_s": round(time.time() - t0, 1)}
            _save_atomic(ema, args.out, meta)
            log.update(meta)
            tmp = log_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(log, indent=1))
            os.replace(tmp, log_path)
    print(f"done: {args.steps} steps, final avg loss {run_loss:.4f}, wall {time.time() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
