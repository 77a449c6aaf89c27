"""Upsampler training (Algorithm 1) on the tiny real SD1.5-style model, in-process.

``fake_vae_encode`` stands in for a VAE: tests have no trained VAE, so a fixed deterministic
map (8x8 average pool + a fixed 3->4 channel mix) turns images into 4-channel latents. Every
other part is real: the ComfyUI model, sampling path (CFGGuider), model_sampling and the pack's
tuned patch.
"""
from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

_MIX = torch.tensor([[0.8, -0.3, 0.2], [0.1, 0.9, -0.4], [-0.5, 0.2, 0.7], [0.3, 0.3, 0.3]])


def fake_vae_encode(pixels: torch.Tensor) -> torch.Tensor:
    """Stand-in VAE encoder: (B, H, W, 3) in 0..1 -> (B, 4, H/8, W/8), deterministic."""
    x = F.avg_pool2d(pixels.movedim(-1, 1).float() * 2 - 1, 8)
    return torch.einsum("oc,bchw->bohw", _MIX, x) * 4.0


def make_images(n: int = 3, size: int = 96, seed: int = 0) -> torch.Tensor:
    """Smooth, structured images (low-frequency colour fields plus stripes), seeded."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    out = []
    for _ in range(n):
        f = torch.rand(3, generator=g) * 6 + 1
        ph = torch.rand(3, generator=g) * 6.28
        img = torch.stack([0.5 + 0.5 * torch.sin(f[c] * (xx + (c + 1) * yy) * 3.14 + ph[c]) for c in range(3)], -1)
        out.append(img)
    return torch.stack(out)




def undamped(model):
    """The tiny model damps its output conv by 0.1 (bounded sampling); after the final GroupNorm
    that caps any feature-level change at ~0.1, so for the loss test it is restored to x1."""
    with torch.no_grad():
        model.model.diffusion_model.out[-1].weight.mul_(10.0)
    return model


def config(pack, **over):
    from self_cascade.nodes.training import TrainConfig

    base = dict(width=64, height=64, scale=2.0, steps=40, learning_rate=1e-2, batch_size=2, seed=0,
                checkpoint_every=10, variant="official", log_every=100)
    base.update(over)
    return TrainConfig(**base)


def cond():
    import tiny_models

    return tiny_models.conditioning(seed=3)


def test_training_reduces_loss_and_keeps_base_weights(pack, tiny_model, tmp_path):
    from self_cascade.nodes.training import train_upsamplers
    from self_cascade.upsampler.fileformat import load_upsamplers

    model = undamped(tiny_model)
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in model.model.named_parameters()}
    path = str(tmp_path / "ups.safetensors")
    res = train_upsamplers(model, make_images(), fake_vae_encode, cond(), config=config(pack), save_path=path,
                           interrupt_check=lambda: None)
    assert res.stopped_reason == "completed" and res.steps_done == 40 and len(res.losses) == 40
    assert all(math.isfinite(v) for v in res.losses)
    first, last = sum(res.losses[:10]) / 10, sum(res.losses[-10:]) / 10
    assert last < 0.95 * first, f"loss did not decrease: first10 {first:.4f} last10 {last:.4f}"
    # paired control: the same seed draws the same crops/timesteps/noise; with a negligible learning
    # rate the last 10 losses stay where the untrained set puts them
    control = train_upsamplers(model, make_images(), fake_vae_encode, cond(), config=config(pack, learning_rate=1e-9),
                               interrupt_check=lambda: None)
    still = sum(control.losses[-10:]) / 10
    assert last < 0.95 * still, f"trained last10 {last:.4f} vs untrained on the same draws {still:.4f}"
    after = model.model.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert torch.equal(v, after[k]), f"base weight {k} changed"
    assert {k: p.requires_grad for k, p in model.model.named_parameters()} == flags
    loaded = load_upsamplers(path)
    assert loaded.info.steps == 40 and loaded.info.K == 700 and loaded.info.end_timestep == 100
    assert loaded.info.scale == 2.0 and loaded.info.family == "SD15" and loaded.info.variant == "official"
    for k, v in res.upsamplers.state_dict().items():
        assert torch.equal(v.cpu(), loaded.state_dict()[k])
    assert any(v.abs().sum() > 0 for k, v in loaded.state_dict().items() if "out_layers.3" in k), "still at init"


class Cancel(Exception):
    pass


def test_cancel_then_resume_matches_uninterrupted_run(pack, tiny_model, tmp_path):
    from self_cascade.nodes.patch import apply_upsamplers
    from self_cascade.nodes.pivot import upsample_pivot
    from self_cascade.nodes.training import train_upsamplers
    from self_cascade.upsampler.fileformat import load_upsamplers

    cfg = dict(steps=12, checkpoint_every=5, batch_size=1)
    full = train_upsamplers(tiny_model, make_images(2), fake_vae_encode, cond(), config=config(pack, **cfg),
                            save_path=str(tmp_path / "full.safetensors"), interrupt_check=lambda: None)
    path = str(tmp_path / "cut.safetensors")
    calls = {"n": 0}

    def cancel_at_8():
        calls["n"] += 1
        if calls["n"] == 8:  # checked before step 8 runs: 7 steps done, last periodic checkpoint at 5
            raise Cancel()

    with pytest.raises(Cancel):
        train_upsamplers(tiny_model, make_images(2), fake_vae_encode, cond(), config=config(pack, **cfg),
                         save_path=path, interrupt_check=cancel_at_8)
    assert not os.path.exists(path), "a cancelled run must not write the final file"
    from self_cascade.upsampler.checkpoint import load_checkpoint

    assert load_checkpoint(path.replace(".safetensors", ".ckpt.safetensors")).step == 7
    res = train_upsamplers(tiny_model, make_images(2), fake_vae_encode, cond(), config=config(pack, **cfg),
                           save_path=path, resume=True, interrupt_check=lambda: None)
    assert res.steps_done == 12 and res.stopped_reason == "completed"
    assert res.losses == pytest.approx(full.losses, rel=1e-4, abs=1e-6)
    uset = load_upsamplers(path)
    assert uset.info.steps == 12
    ref = load_upsamplers(str(tmp_path / "full.safetensors"))
    for k, v in ref.state_dict().items():
        assert torch.allclose(v, uset.state_dict()[k], atol=1e-5), k
    # the saved set patches a model and changes its prediction
    latent = {"samples": fake_vae_encode(make_images(1, 32))}
    up = upsample_pivot(latent, 2.0, "bicubic")
    patched = apply_upsamplers(tiny_model, uset, up["self_cascade_pivot"], 1.0, 100.0)
    import comfy.sample

    def run(m):
        noise = torch.randn(up["samples"].shape, generator=torch.Generator().manual_seed(1))
        return comfy.sample.sample(m, noise, 3, 1.0, "euler", "normal", cond(), cond(), up["samples"],
                                   disable_pbar=True, seed=1)

    with torch.inference_mode():
        assert not torch.allclose(run(patched), run(tiny_model))


def test_bad_inputs_are_clear_errors(pack, tiny_model, tmp_path):
    from self_cascade.nodes.common import SelfCascadeError
    from self_cascade.nodes.training import save_path_for, train_upsamplers

    for bad in ("../x", "a/b", "a\\b", "..", "", ".hidden"):
        with pytest.raises(SelfCascadeError):
            save_path_for(bad, str(tmp_path))
    imgs = [make_images(1, 96), make_images(1, 48)]
    with pytest.raises(SelfCascadeError, match=r"images\[1\]\[0\] \(48x48\)"):
        train_upsamplers(tiny_model, imgs, fake_vae_encode, cond(), config=config(pack, steps=1),
                         interrupt_check=lambda: None)

    def three_channels(px):
        return fake_vae_encode(px)[:, :3]

    with pytest.raises(SelfCascadeError, match="3-channel latents but the model takes 4"):
        train_upsamplers(tiny_model, make_images(1), three_channels, cond(), config=config(pack, steps=1),
                         interrupt_check=lambda: None)
    path = str(tmp_path / "nan.safetensors")

    def nan_after_first(px):  # a latent with NaN: the loss goes non-finite at the first step
        out = fake_vae_encode(px)
        return out * float("nan")

    res = train_upsamplers(tiny_model, make_images(1), nan_after_first, cond(),
                           config=config(pack, steps=3), save_path=path, interrupt_check=lambda: None)
    assert res.stopped_reason.startswith("non-finite loss") and res.steps_done == 0
    assert not os.path.exists(path)


def test_loss_curve_image(pack):
    from self_cascade.upsampler.losscurve import draw_loss_curve

    img = draw_loss_curve([1.0, 0.5, float("nan"), 0.25])
    assert img.shape == (1, 256, 512, 3) and 0 <= float(img.min()) and float(img.max()) <= 1
    assert float(img.std()) > 0.01


@pytest.mark.parametrize("family", ["sdxl", "sd21v"])
def test_other_families_train(pack, family):
    """SDXL (ADM y from the crop size via process_conds) and v-prediction models train and stay finite."""
    import tiny_models
    from self_cascade.nodes.training import train_upsamplers

    model = tiny_models.tiny_sdxl(seed=0) if family == "sdxl" else tiny_models.tiny_sd21v(seed=0)
    positive = tiny_models.conditioning(seed=3, pooled=family == "sdxl")
    res = train_upsamplers(model, make_images(2), fake_vae_encode, positive, config=config(pack, steps=3, batch_size=1),
                           interrupt_check=lambda: None)
    assert res.steps_done == 3 and all(math.isfinite(v) for v in res.losses)
    assert res.upsamplers.info.family == ("SDXL" if family == "sdxl" else "SD20")


def test_generated_pivots_per_image_captions_and_dropout(pack, tiny_model):
    """pivot_mode 'generated' (base-model samples), one conditioning per image, caption dropout."""
    import tiny_models
    from self_cascade.nodes.training import train_upsamplers

    per_image = [tiny_models.conditioning(seed=s) for s in (1, 2)]
    empty = tiny_models.conditioning(seed=9)
    res = train_upsamplers(tiny_model, make_images(2), fake_vae_encode, per_image,
                           config=config(pack, steps=3, batch_size=2, pivot_mode="generated", generated_steps=2,
                                         caption_dropout=0.5),
                           interrupt_check=lambda: None, empty=empty)
    assert res.steps_done == 3 and all(math.isfinite(v) for v in res.losses)


def test_folder_input_is_confined_and_converted(pack, tmp_path):
    from PIL import Image
    from self_cascade.nodes.common import SelfCascadeError
    from self_cascade.nodes.training.data import load_folder

    root = tmp_path / "input"
    (root / "ok").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    Image.new("RGBA", (40, 30), (10, 20, 30, 128)).save(root / "ok" / "a.png")
    Image.new("L", (20, 20), 77).save(root / "ok" / "b.png")
    (root / "ok" / "b.txt").write_text("a caption\n")
    data = load_folder("ok", str(root))
    assert data.names == ["a.png", "b.png"] and data.captions == [None, "a caption"]
    assert [tuple(i.shape) for i in data.images] == [(30, 40, 3), (20, 20, 3)]
    os.symlink(outside, root / "escape")
    Image.new("RGB", (8, 8)).save(outside / "x.png")
    os.symlink(outside / "x.png", root / "ok" / "link.png")
    for bad, msg in (("escape", "outside"), ("../outside", "'..'"), (str(outside), "absolute"), ("nope", "does not exist")):
        with pytest.raises(SelfCascadeError, match=msg):
            load_folder(bad, str(root))
    with pytest.raises(SelfCascadeError, match=r"link.png \(symlink outside"):
        load_folder("ok", str(root))


def test_node_schema_and_nan_message(pack, tiny_model, monkeypatch, tmp_path):
    import folder_paths
    from self_cascade.nodes.common import SelfCascadeError
    from self_cascade.nodes.train import SelfCascadeTrainUpsamplers

    schema = SelfCascadeTrainUpsamplers.define_schema()
    assert schema.is_experimental and schema.category == "sampling/self_cascade/training"
    assert all(i.tooltip for i in schema.inputs) and all(o.tooltip for o in schema.outputs)
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "self_cascade", ([str(tmp_path / "self_cascade")], {".safetensors"}))

    class NanVAE:  # stands in for a VAE whose latents are NaN
        def encode(self, px):
            return fake_vae_encode(px) * float("nan")

    kw = dict(width=64, height=64, scale=2.0, steps=2, learning_rate=1e-3, batch_size=1, K=700.0, end_timestep=100.0,
              pivot_mode="downsample", variant="official", variant_size=0, seed=0, save_name="d_nan",
              checkpoint_every=1, resume=False, images=make_images(1), conditioning=cond(), caption_dropout=0.0)
    with pytest.raises(SelfCascadeError, match="non-finite loss .* no checkpoint had been written"):
        SelfCascadeTrainUpsamplers.execute(model=tiny_model, vae=NanVAE(), **kw)
    assert not (tmp_path / "self_cascade" / "d_nan.safetensors").exists()


def test_nan_midway_keeps_last_good_checkpoint(pack, tiny_model, tmp_path):
    from self_cascade.nodes.training import train_upsamplers
    from self_cascade.upsampler.checkpoint import load_checkpoint

    calls = {"n": 0}

    def poison(module, args, out):  # the 4th training forward returns NaN
        calls["n"] += 1
        return out * float("nan") if calls["n"] == 4 else out

    handle = tiny_model.model.diffusion_model.out.register_forward_hook(poison)
    try:
        path = str(tmp_path / "d.safetensors")
        res = train_upsamplers(tiny_model, make_images(1), fake_vae_encode, cond(),
                               config=config(pack, steps=6, batch_size=1, checkpoint_every=2), save_path=path,
                               interrupt_check=lambda: None)
    finally:
        handle.remove()
    assert res.stopped_reason == "non-finite loss (nan) at step 4" and res.steps_done == 3
    assert res.checkpoint_step == 2 and not os.path.exists(path)
    ckpt = load_checkpoint(res.checkpoint_path)
    assert ckpt.step == 2 and all(torch.isfinite(v).all() for v in ckpt.weights.values())


def test_gradient_checkpointing_gives_the_same_run(pack, tiny_model, monkeypatch):
    """On CPU 'auto' is off; forced on, every UNet layer is recomputed in backward: same losses, and
    the layers' forward methods are restored afterwards."""
    import torch.utils.checkpoint as tuc
    from self_cascade.nodes.training import train_upsamplers

    real = tuc.checkpoint
    count = {"wrapped": 0, "ran": 0}

    def counting(fn, *a, **k):
        count["wrapped"] += 1

        def run(*aa, **kk):
            count["ran"] += 1
            return fn(*aa, **kk)

        return real(run, *a, **k)

    monkeypatch.setattr(tuc, "checkpoint", counting)
    unet = tiny_model.model.diffusion_model
    runs = {}
    for mode in ("off", "on"):
        runs[mode] = train_upsamplers(tiny_model, make_images(1), fake_vae_encode, cond(),
                                      config=config(pack, steps=3, batch_size=1, gradient_checkpointing=mode),
                                      interrupt_check=lambda: None).losses
        if mode == "off":
            assert count == {"wrapped": 0, "ran": 0}
    assert runs["on"] == pytest.approx(runs["off"], rel=1e-5)
    assert count["wrapped"] > 0 and count["ran"] > count["wrapped"], f"no recompute in backward: {count}"
    assert all("forward" not in layer.__dict__ for block in unet.input_blocks for layer in block)


def test_comfy_interrupt_saves_checkpoint_and_existing_name_is_kept(pack, tiny_model, tmp_path):
    """ComfyUI's own interrupt flag (the default check) -> checkpoint at the last step, re-raised;
    a second run on the same save name without resume refuses to overwrite."""
    import comfy.model_management as mm
    from self_cascade.nodes.common import SelfCascadeError
    from self_cascade.nodes.training import train_upsamplers
    from self_cascade.upsampler.checkpoint import load_checkpoint

    path = str(tmp_path / "i.safetensors")

    def progress(step, total, loss):
        if step == 2:
            mm.interrupt_current_processing(True)

    try:
        with pytest.raises(mm.InterruptProcessingException):
            train_upsamplers(tiny_model, make_images(1), fake_vae_encode, cond(), progress=progress,
                             config=config(pack, steps=5, batch_size=1, checkpoint_every=0), save_path=path)
    finally:
        mm.interrupt_current_processing(False)
    ckpt_file = path.replace(".safetensors", ".ckpt.safetensors")
    assert load_checkpoint(ckpt_file).step == 2
    before = open(ckpt_file, "rb").read()
    with pytest.raises(SelfCascadeError, match="already exists"):
        train_upsamplers(tiny_model, make_images(1), fake_vae_encode, cond(), save_path=path,
                         config=config(pack, steps=5, batch_size=1), interrupt_check=lambda: None)
    assert open(ckpt_file, "rb").read() == before
    with pytest.raises(SelfCascadeError, match="settings changed .*width"):
        train_upsamplers(tiny_model, make_images(1), fake_vae_encode, cond(), save_path=path, resume=True,
                         config=config(pack, steps=5, batch_size=1, width=80, height=80), interrupt_check=lambda: None)


def test_fingerprint_follows_the_folder_not_the_output_file(pack, monkeypatch, tmp_path):
    import folder_paths
    from PIL import Image
    from self_cascade.nodes.train import SelfCascadeTrainUpsamplers as Node

    (tmp_path / "input" / "imgs").mkdir(parents=True)
    monkeypatch.setattr(folder_paths, "get_input_directory", lambda: str(tmp_path / "input"))
    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "self_cascade", ([str(tmp_path / "sc")], {".safetensors"}))
    Image.new("RGB", (8, 8)).save(tmp_path / "input" / "imgs" / "a.png")
    first = Node.fingerprint_inputs(folder="imgs", save_name="x")
    assert first == Node.fingerprint_inputs(folder="imgs", save_name="x")
    Image.new("RGB", (8, 8)).save(tmp_path / "input" / "imgs" / "b.png")
    second = Node.fingerprint_inputs(folder="imgs", save_name="x")
    assert second != first
    (tmp_path / "sc").mkdir(exist_ok=True)
    (tmp_path / "sc" / "x.safetensors").write_bytes(b"0")  # the node's own output: a re-queue is served from cache
    assert Node.fingerprint_inputs(folder="imgs", save_name="x") == second
    bad = Node.fingerprint_inputs(folder="../etc", save_name="x")
    assert bad != bad  # NaN: always re-run so execute() reports the error


def test_node_with_conditioning_only_trains_with_the_default_caption_dropout(pack, tiny_model, monkeypatch, tmp_path):
    """caption_dropout defaults to 0.1 and needs clip for the empty prompt: with only 'conditioning' connected
    the node trains (dropout off, said in the log) instead of failing; pivot_mode 'generated' still needs clip."""
    import folder_paths
    from self_cascade.nodes.common import SelfCascadeError
    from self_cascade.nodes.train import SelfCascadeTrainUpsamplers

    monkeypatch.setattr(folder_paths, "models_dir", str(tmp_path))
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "self_cascade", ([str(tmp_path / "self_cascade")], {".safetensors"}))

    class VAE:
        def encode(self, px):
            return fake_vae_encode(px)

    kw = dict(width=64, height=64, scale=2.0, steps=2, learning_rate=1e-3, batch_size=1, K=700.0, end_timestep=100.0,
              variant="light", variant_size=8, seed=0, checkpoint_every=0, resume=False, images=make_images(1),
              conditioning=cond())
    managed, curve = SelfCascadeTrainUpsamplers.execute(model=tiny_model, vae=VAE(), pivot_mode="downsample",
                                                        save_name="d_cond_only", **kw).result
    assert managed.model.info.steps == 2 and curve.shape[-1] == 3
    assert (tmp_path / "self_cascade" / "d_cond_only.safetensors").is_file()
    with pytest.raises(SelfCascadeError, match="pivot_mode 'generated' needs 'clip'"):
        SelfCascadeTrainUpsamplers.execute(model=tiny_model, vae=VAE(), pivot_mode="generated", save_name="d_gen", **kw)
