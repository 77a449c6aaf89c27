"""Cancel and interleave on one live server; compare with a fresh server, bit for bit (CPU).

A second, fresh server (started for this module) gives the reference output of each prompt. On the
shared server: (1) POST /interrupt during a tuned Stage, inside Upscale's second stage, and during
training; after each, the next prompts (the same settings and different ones) give exactly the
fresh server's outputs. (2) Prompts with two trained sets at different strengths, the untrained
set and no upsamplers, queued back to back, each give exactly their fresh-server output; the Stage
really ran each time (it is not among the nodes ComfyUI served from its cache).
Between Upscale's stages the cancel is checked in-process (a progress hook sets ComfyUI's own
interrupt flag when the first stage's last step is done).
"""
from __future__ import annotations

import time
import urllib.request

import pytest
import torch

SLOW_STEPS = 150  # K=700 of 150 steps: ~105 executed, several seconds on the CPU


def _sets(folder) -> None:
    """Two trained-looking sets (random non-zero weights) for the tiny checkpoint."""
    from self_cascade.upsampler.fileformat import save_upsamplers
    from test_upsampler_server import _tiny_checkpoint_set

    folder.mkdir(parents=True, exist_ok=True)
    for name, seed in (("ia_set1", 1), ("ia_set2", 2)):
        with torch.random.fork_rng():  # the same set on both servers: its initialisation is seeded too
            torch.manual_seed(seed)
            uset = _tiny_checkpoint_set("light")
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in uset.parameters():
                p.add_(0.2 * torch.randn(p.shape, generator=g))
        save_upsamplers(str(folder / f"{name}.safetensors"), uset)


def _stage_prompt(ckpt: str, ups: str | None = None, strength: float = 1.0, seed: int = 3, steps: int = 6,
                  K: float = 700.0) -> dict:
    """A Stage from a 32 px base to 64 px; ``ups``: a set's file name, 'untrained', or None."""
    g = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cat", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
        "10": {"class_type": "SelfCascadeStage", "inputs": {
            "model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent": ["4", 0], "scale": 2.0,
            "upscale_method": "bicubic", "seed": seed, "steps": steps, "cfg": 2.0, "sampler_name": "euler",
            "scheduler": "normal", "K": K, "strength": strength}},
        "11": {"class_type": "SaveLatent", "inputs": {"samples": ["10", 0], "filename_prefix": "ia"}},
    }
    if ups == "untrained":
        g["7"] = {"class_type": "SelfCascadeUntrainedUpsamplers", "inputs": {"model": ["1", 0]}}
    elif ups:
        g["7"] = {"class_type": "SelfCascadeUpsamplerLoader", "inputs": {"upsampler_name": ups}}
    if ups:
        g["10"]["inputs"]["upsamplers"] = ["7", 0]
    return g


def _upscale_prompt(ckpt: str, steps: int) -> dict:
    g = _stage_prompt(ckpt, "untrained", 0.5, steps=steps)
    inputs = {k: v for k, v in g["10"]["inputs"].items() if k != "scale"}
    g["10"] = {"class_type": "SelfCascadeUpscale", "inputs": dict(inputs, width=128, height=128)}
    return g


def _train_prompt(ckpt: str, save_name: str) -> dict:
    from test_train_server import _train_prompt as base

    g = base(ckpt, "ia_imgs", save_name, steps=400)
    g["2"]["inputs"].update(checkpoint_every=1, width=64, height=64)
    return g


def _latent_of(server, entry: dict, node: str = "11") -> torch.Tensor:
    import safetensors.torch

    f = entry["outputs"][node]["latents"][0]
    return safetensors.torch.load_file(str(server.base_dir / "output" / f["subfolder"] / f["filename"]))["latent_tensor"]


def _cached_nodes(entry: dict) -> set[str]:
    return {n for kind, data in entry["status"]["messages"] if kind == "execution_cached" for n in data["nodes"]}


def _run(client, server, prompt: dict) -> torch.Tensor:
    entry = client.run(prompt, timeout=300)
    assert "10" not in _cached_nodes(entry), "the Stage was served from the cache; the check would prove nothing"
    return _latent_of(server, entry)


@pytest.fixture(scope="module")
def fresh(pack, tmp_path_factory, tiny_checkpoint_file):
    """A second server, fresh: the reference outputs come from it (one prompt each, nothing cancelled)."""
    import hostenv
    from comfy_client import ComfyClient
    from test_train_server import _write_images

    base = tmp_path_factory.mktemp("fresh_base")
    (base / "models" / "checkpoints").mkdir(parents=True)
    (base / "models" / "checkpoints" / tiny_checkpoint_file.name).symlink_to(tiny_checkpoint_file)
    _sets(base / "models" / "self_cascade")
    _write_images(base / "input" / "ia_imgs")
    server = hostenv.start_server(base)
    try:
        yield server, ComfyClient(server.url, timeout=60)
    finally:
        server.stop()


@pytest.fixture(scope="module")
def shared(comfy_server, client, tiny_checkpoint):
    from test_train_server import _write_images

    _sets(comfy_server.base_dir / "models" / "self_cascade")
    _write_images(comfy_server.base_dir / "input" / "ia_imgs")
    return comfy_server, client


#: The prompts compared after each cancel and in the interleaving test.
AFTER = {
    "A": dict(ups="ia_set1.safetensors", strength=1.0),
    "B": dict(ups="ia_set2.safetensors", strength=0.5),
    "U": dict(ups="untrained", strength=0.5),
    "N": dict(ups=None),
    "A_other": dict(ups="ia_set1.safetensors", strength=1.0, seed=11, K=600.0),
}


@pytest.fixture(scope="module")
def reference(fresh, tiny_checkpoint):
    server, c = fresh
    out = {}
    for name in ("N", "U", "B", "A", "A_other"):  # an order unlike any used on the shared server
        out[name] = _run(c, server, _stage_prompt(tiny_checkpoint, **AFTER[name]))
    out["slow"] = _run(c, server, _stage_prompt(tiny_checkpoint, "ia_set1.safetensors", steps=SLOW_STEPS))
    assert not torch.equal(out["A"], out["N"]) and not torch.equal(out["A"], out["B"]), "sets without effect"
    assert not torch.equal(out["U"], out["N"])
    return out


def _interrupt(url: str) -> None:
    req = urllib.request.Request(url + "/interrupt", data=b"{}", headers={"Content-Type": "application/json"})
    urllib.request.urlopen(req, timeout=10).read()


def _cancel(server, c, prompt: dict, ready) -> dict:
    """Queue ``prompt``, wait until ``ready()`` says it is where it should be cancelled, POST /interrupt;
    returns its history entry (which must say it was interrupted, in node 10 or 2)."""
    from comfy_client import ExecutionFailed

    pid = c.queue(prompt)
    deadline = time.monotonic() + 240
    while not ready():
        assert c.history(pid) is None, "the prompt finished before it could be cancelled"
        assert time.monotonic() < deadline, "never reached the point to cancel at"
        time.sleep(0.05)
    _interrupt(server.url)
    with pytest.raises(ExecutionFailed) as info:
        c.wait(pid, timeout=240)
    msgs = info.value.details["status"]["messages"]
    stopped = [d for k, d in msgs if k == "execution_interrupted"]
    assert stopped, f"not interrupted: {msgs}"
    return stopped[0]


def _check_after(server, c, ref, tiny_checkpoint, names=("A", "N", "A_other")) -> None:
    for name in names:
        got = _run(c, server, _stage_prompt(tiny_checkpoint, **AFTER[name]))
        assert torch.equal(got, ref[name]), f"prompt {name} after the cancel differs from the fresh server"


def _log_count(server, text: str) -> int:
    return server.log().count(text)


def test_cancel_during_a_tuned_stage(shared, reference, tiny_checkpoint):
    server, c = shared
    c.run(_stage_prompt(tiny_checkpoint, "ia_set1.safetensors"), timeout=300)  # loaders and text cached
    slow = _stage_prompt(tiny_checkpoint, "ia_set1.safetensors", steps=SLOW_STEPS)
    before = _log_count(server, "Self-Cascade stage:")
    t = {}

    def in_sampling():
        if _log_count(server, "Self-Cascade stage:") > before:
            t.setdefault("seen", time.monotonic())
            return time.monotonic() - t["seen"] > 1.0
        return False

    stopped = _cancel(server, c, slow, in_sampling)
    assert stopped["node_id"] == "10", stopped
    assert torch.equal(_run(c, server, slow), reference["slow"]), "the same prompt again differs"
    _check_after(server, c, reference, tiny_checkpoint)


def test_cancel_inside_upscales_second_stage(shared, reference, tiny_checkpoint):
    server, c = shared
    before = _log_count(server, "Self-Cascade stage:")
    stopped = _cancel(server, c, _upscale_prompt(tiny_checkpoint, SLOW_STEPS),
                      lambda: _log_count(server, "Self-Cascade stage:") >= before + 2)
    assert stopped["node_id"] == "10", stopped
    _check_after(server, c, reference, tiny_checkpoint, names=("U", "N"))


def test_cancel_during_training(shared, reference, tiny_checkpoint):
    server, c = shared
    ckpt = server.base_dir / "models" / "self_cascade" / "ia_cancel.ckpt.safetensors"
    stopped = _cancel(server, c, _train_prompt(tiny_checkpoint, "ia_cancel"), ckpt.exists)
    assert stopped["node_id"] == "2", stopped
    assert not ckpt.with_name("ia_cancel.safetensors").exists(), "a cancelled run wrote its final set"
    _check_after(server, c, reference, tiny_checkpoint, names=("A", "U", "N"))


def test_two_sets_interleaved_back_to_back(shared, reference, tiny_checkpoint):
    """A (set 1, 1.0), B (set 2, 0.5), A, U (untrained), N (none), U, B, A: all queued at once."""
    server, c = shared
    order = ["A", "B", "A", "U", "N", "U", "B", "A"]
    ids = [c.queue(_stage_prompt(tiny_checkpoint, **AFTER[name])) for name in order]
    for name, pid in zip(order, ids, strict=True):
        entry = c.wait(pid, timeout=300)
        assert "10" not in _cached_nodes(entry), f"{name}: the Stage was served from the cache"
        assert torch.equal(_latent_of(server, entry), reference[name]), f"{name} differs from its fresh-server output"


def test_cancel_between_upscale_stages_in_process(pack, tiny_model):
    """ComfyUI's interrupt flag set when stage 1's last step is done: Upscale stops before stage 2
    samples; the model is unchanged and the next run equals a run before the cancel."""
    import comfy.model_management as mm
    import comfy.utils
    import tiny_models
    from self_cascade.nodes.cascade import StageSettings
    from self_cascade.nodes.upscale import upscale

    cond = tiny_models.conditioning(3)
    latent = {"samples": torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))}
    s = StageSettings(seed=1, steps=10, cfg=2.0)
    first, _, _ = upscale(tiny_model, cond, cond, latent, s, (128, 128), disable_pbar=True)
    options = dict(tiny_model.model_options)
    seen: list[tuple[int, int]] = []

    def hook(value, total, preview, **_):  # replaces the server's hook, which would check the flag itself
        seen.append((value, total))
        if value == total // 2:  # two stages of equal step counts: stage 1 is done
            mm.interrupt_current_processing(True)

    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            upscale(tiny_model, cond, cond, latent, s, (128, 128), disable_pbar=True)
    finally:
        comfy.utils.set_progress_bar_global_hook(None)
        mm.interrupt_current_processing(False)
    value, total = seen[-1]
    assert value == total // 2 and total > 2, f"stage 2 sampled after the cancel: {seen}"
    assert tiny_model.model_options == options
    again, _, _ = upscale(tiny_model, cond, cond, latent, s, (128, 128), disable_pbar=True)
    assert torch.equal(again["samples"], first["samples"])
