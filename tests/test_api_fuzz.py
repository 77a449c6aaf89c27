"""Every input the API can send, for each pack node, through the live server's POST /prompt.

For each node a small valid graph is built around it (the seeded tiny SD1.5 checkpoint, 32 px
latents), then one input at a time is replaced by: values beyond the declared range, wrong types,
NaN/inf (JSON carries them as NaN/Infinity), links of the wrong kind, a missing required input,
a missing optional input. Each answer must be a validation error naming the input, or the node's
own execution error naming it, or (only for the valid variants) a normal run; never an HTTP 500,
never a hang; the server keeps serving. Upscale to 65536 px is among them. At-range values that
are cheap to run (K, strength, seed, scale limits) run for real.
"""
from __future__ import annotations

import json
import math

import pytest

PACK = "self_cascade"
#: Inputs whose at-range extremes also run (cheap ones; a 16384 px stage or 10000 steps would run for
#: minutes, so sizes and steps are checked beyond their range only).
AT_LIMIT = {"K", "strength", "noise_seed"}
#: Link inputs of the training node whose literal values reach the node unchecked today (see
#: test_train_node_link_inputs_are_type_checked); kept out of the sweep so that each failure is named once.
TRAIN_LINKS = {"vae", "clip", "conditioning"}


def _base(ckpt: str) -> dict:
    return {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": ckpt}},
        "2": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red cat", "clip": ["1", 1]}},
        "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["1", 1]}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 32, "height": 32, "batch_size": 1}},
        "5": {"class_type": "SelfCascadeUntrainedUpsamplers", "inputs": {"model": ["1", 0]}},
    }


_STAGE = {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent": ["4", 0], "scale": 2.0,
          "upscale_method": "bicubic", "seed": 0, "steps": 2, "cfg": 2.0, "sampler_name": "euler",
          "scheduler": "normal", "K": 700.0}
VALID = {
    "SelfCascadePivotUpsample": ({"latent": ["4", 0], "scale": 2.0, "upscale_method": "bicubic", "width": 0,
                                  "height": 0}, "latent"),
    "SelfCascadeRenoise": ({"model": ["1", 0], "latent": ["4", 0], "K": 700.0, "noise_seed": 0, "steps": 4,
                            "scheduler": "normal"}, "latent"),
    "SelfCascadeStage": (dict(_STAGE, upsamplers=["5", 0], strength=0.5, end_timestep=100.0), "latent"),
    "SelfCascadeUpscale": ({k: v for k, v in _STAGE.items() if k != "scale"}
                           | {"width": 64, "height": 64, "upsamplers": ["5", 0], "strength": 0.5}, "latent"),
    "SelfCascadeStagePlan": ({"base_width": 512, "base_height": 512, "target_width": 2048, "target_height": 2048,
                              "model": ["1", 0]}, "any"),  # with a model, so that its K is read
    "SelfCascadeUpsamplerLoader": ({"upsampler_name": "fuzz_tiny_light.safetensors"}, "upsamplers"),
    "SelfCascadeApplyUpsamplers": ({"model": ["1", 0], "upsamplers": ["5", 0], "pivot": ["4", 0], "strength": 1.0,
                                    "end_timestep": 100.0}, "model"),
    "SelfCascadeUntrainedUpsamplers": ({"model": ["1", 0]}, "upsamplers"),
    "SelfCascadeTrainUpsamplers": ({"model": ["1", 0], "vae": ["1", 2], "clip": ["1", 1], "folder": "fuzz_imgs",
                                    "prompt": "a pattern", "caption_dropout": 0.0, "width": 64, "height": 64,
                                    "scale": 2.0, "steps": 1, "learning_rate": 1e-3, "batch_size": 1, "K": 700.0,
                                    "end_timestep": 100.0, "pivot_mode": "downsample", "variant": "light",
                                    "variant_size": 8, "seed": 0, "save_name": "fuzz_train", "checkpoint_every": 0,
                                    "resume": False}, "train"),
}


def _graph(ckpt: str, node: str, inputs: dict) -> dict:
    """The base graph, the node under test as "10", and an output node that makes it run."""
    g = _base(ckpt)
    g["10"] = {"class_type": node, "inputs": inputs}
    kind = VALID[node][1]
    if kind == "latent":
        g["11"] = {"class_type": "SaveLatent", "inputs": {"samples": ["10", 0], "filename_prefix": "fuzz"}}
    elif kind == "any":
        g["11"] = {"class_type": "PreviewAny", "inputs": {"source": ["10", 0]}}
    elif kind == "train":
        g["11"] = {"class_type": "PreviewImage", "inputs": {"images": ["10", 1]}}
    elif kind == "upsamplers":
        g["11"] = {"class_type": "SelfCascadeStage", "inputs": dict(_STAGE, upsamplers=["10", 0])}
        g["12"] = {"class_type": "SaveLatent", "inputs": {"samples": ["11", 0], "filename_prefix": "fuzz"}}
    else:  # a patched MODEL: a KSampler at twice the pivot's size
        g["11"] = {"class_type": "SelfCascadePivotUpsample", "inputs": VALID["SelfCascadePivotUpsample"][0]}
        g["12"] = {"class_type": "KSampler", "inputs": {
            "model": ["10", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["11", 0], "seed": 1,
            "steps": 2, "cfg": 2.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 0.7}}
        g["13"] = {"class_type": "SaveLatent", "inputs": {"samples": ["12", 0], "filename_prefix": "fuzz"}}
    return g


def _variants(name: str, spec: list, optional: bool, node: str) -> list[tuple[str, object, bool]]:
    """(label, value or MISSING, valid?) for one input of the schema. Wrong JSON types that ComfyUI
    refuses by one generic path (null, dicts, short lists) are sent once per kind of input, not for
    every input, to keep the module fast."""
    kind, opts = spec[0], (spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {})
    out: list[tuple[str, object, bool]] = [("missing", MISSING, optional)]
    if isinstance(kind, list) or kind == "COMBO":
        out += [("unknown option", "no_such_option", False)]
    elif kind in ("INT", "FLOAT"):
        lo, hi = opts.get("min"), opts.get("max")
        if lo is not None:
            out.append(("below min", lo - 1, False))
        if hi is not None:
            out.append(("above max", hi + 1 if kind == "INT" else hi * 2 + 1, False))
        out += [("string", "abc", False), ("NaN", math.nan, False), ("inf", math.inf, False)]
        if name in AT_LIMIT and node != "SelfCascadeTrainUpsamplers" and lo is not None and hi is not None:
            out += [("at min", lo, True), ("at max", hi, True)]
    elif kind in ("BOOLEAN", "STRING"):
        pass  # ComfyUI itself coerces any JSON value to these (bool('maybe'), str({...})): host behaviour
    else:  # a link input (MODEL, LATENT, ...): a literal, a link to an output of another type, a dangling link
        out += [("literal", 5, False), ("wrong type", ["2", 0] if kind == "LATENT" else ["4", 0], False),
                ("dangling link", ["99", 0], False)]
    return out


MISSING = object()


def _outcome(client, prompt: dict, timeout: float = 120) -> tuple[str, str]:
    """('rejected' | 'failed' | 'ok', text). An HTTP 500 or a timeout raises (the test fails)."""
    from comfy_client import ExecutionFailed, PromptRejected

    try:
        pid = client.queue(prompt)
    except PromptRejected as e:
        return "rejected", json.dumps(e.details)
    try:
        client.wait(pid, timeout=timeout)
    except ExecutionFailed as e:
        msgs = [m[1] for m in e.details.get("status", {}).get("messages", []) if m[0] == "execution_error"]
        return "failed", json.dumps({"message": str(e), "node": msgs[0].get("node_id") if msgs else None})
    return "ok", ""


@pytest.fixture(scope="module")
def fuzz_server(pack, comfy_server, client, tiny_checkpoint):
    """The server with a set for the tiny checkpoint and a training folder in place."""
    import numpy as np
    from PIL import Image
    from self_cascade.upsampler.fileformat import save_upsamplers
    from test_upsampler_server import _tiny_checkpoint_set

    folder = comfy_server.base_dir / "models" / "self_cascade"
    folder.mkdir(parents=True, exist_ok=True)
    save_upsamplers(str(folder / "fuzz_tiny_light.safetensors"), _tiny_checkpoint_set("light"))
    imgs = comfy_server.base_dir / "input" / "fuzz_imgs"  # one small image: every training run is short
    imgs.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)).save(imgs / "a.png")
    return comfy_server


def _schema(client, node: str) -> dict:
    info = client.object_info()[node]["input"]
    return {"required": info.get("required", {}), "optional": info.get("optional", {})}


@pytest.mark.parametrize("node", sorted(VALID))
def test_every_input_of_every_node(fuzz_server, client, tiny_checkpoint, node):
    valid, _ = VALID[node]
    schema = _schema(client, node)
    declared = {**schema["required"], **schema["optional"]}
    assert set(valid) <= set(declared), f"test graph uses inputs the node does not declare: {set(valid) - set(declared)}"
    kind, text = _outcome(client, _graph(tiny_checkpoint, node, valid))
    assert kind == "ok", f"{node}: the valid graph failed: {text}"
    problems = []
    for i, (name, spec) in enumerate(sorted(declared.items())):
        for label, value, ok in _variants(name, spec, name in schema["optional"], node):
            inputs = dict(valid)
            if value is MISSING:
                inputs.pop(name, None)
            else:
                inputs[name] = value
            if node == "SelfCascadeTrainUpsamplers" and name in TRAIN_LINKS and label == "literal":
                continue
            if node == "SelfCascadeTrainUpsamplers" and name != "save_name":
                inputs["save_name"] = f"fuzz_{i}_{label.replace(' ', '_')}"
            kind, text = _outcome(client, _graph(tiny_checkpoint, node, inputs))
            case = f"{node}.{name} {label} ({value if value is not MISSING else '-'}): {kind}"
            if kind == "ok" and not ok and not (value is MISSING and name not in valid):
                problems.append(f"{case}: accepted and ran")
            elif kind == "rejected" and name not in text and label != "dangling link":
                # (a link to a node that does not exist is refused by ComfyUI itself, naming the node id)
                problems.append(f"{case}: validation error does not name the input: {text[:300]}")
            elif kind == "failed" and name not in text and not (label == "unknown option" and str(value) in text):
                problems.append(f"{case}: execution error does not name the input: {text[:300]}")
            elif kind == "rejected" and ok:
                problems.append(f"{case}: a valid value was refused by validation: {text[:300]}")
            elif kind == "failed" and ok and not (value is MISSING and name in text):
                # a missing optional input may be needed in combination: then the node must say which
                problems.append(f"{case}: a valid value failed: {text[:300]}")
    for label, value in (("null", None), ("dict", {"a": 1}), ("short link", [1]), ("-inf", -math.inf)):
        name = next(n for n in sorted(schema["required"]) if schema["required"][n][0] in ("INT", "FLOAT"))\
            if any(v[0] in ("INT", "FLOAT") for v in schema["required"].values()) else None
        if name is None:
            break
        kind, text = _outcome(client, _graph(tiny_checkpoint, node, dict(valid, **{name: value})))
        if kind == "ok" or name not in text:
            problems.append(f"{node}.{name} {label}: {kind} {text[:300]}")
    assert not problems, "\n".join(problems)
    assert client.object_info()[node], "the server stopped answering"


@pytest.mark.parametrize("size", [65536, 16392])
def test_upscale_to_a_huge_size_is_refused_at_once(fuzz_server, client, tiny_checkpoint, size):
    inputs = dict(VALID["SelfCascadeUpscale"][0], width=size, height=size)
    kind, text = _outcome(client, _graph(tiny_checkpoint, "SelfCascadeUpscale", inputs), timeout=30)
    assert kind == "rejected" and "width" in text and "height" in text, (kind, text[:500])


def test_apply_upsamplers_strength_is_checked_by_the_server(fuzz_server, client, tiny_checkpoint):
    """Below the schema's min the server's validation refuses it; NaN (which passes ComfyUI's range
    check) is refused by the node naming 'strength'."""
    valid = VALID["SelfCascadeApplyUpsamplers"][0]
    kind, text = _outcome(client, _graph(tiny_checkpoint, "SelfCascadeApplyUpsamplers", dict(valid, strength=-1.0)))
    assert kind == "rejected" and "strength" in text, text[:500]
    kind, text = _outcome(client, _graph(tiny_checkpoint, "SelfCascadeApplyUpsamplers",
                                         dict(valid, strength=math.nan)))
    assert kind in ("rejected", "failed") and "strength" in text, (kind, text[:500])


def test_lying_files_in_the_model_folder(fuzz_server, client, tiny_checkpoint, tmp_path):
    """Liars in models/self_cascade: the loader still lists every file, a liar is a clear error naming
    itself, the good set still runs."""
    from test_hostile_files import hostile_files

    folder = fuzz_server.base_dir / "models" / "self_cascade"
    names = hostile_files(folder)
    options = json.dumps(client.object_info()["SelfCascadeUpsamplerLoader"]["input"]["required"]["upsampler_name"])
    assert all(n in options for n in names) and "fuzz_tiny_light.safetensors" in options
    for name in names:
        kind, text = _outcome(client, _graph(tiny_checkpoint, "SelfCascadeUpsamplerLoader", {"upsampler_name": name}))
        assert kind == "failed" and name in text, (name, kind, text[:400])
    kind, text = _outcome(client, _graph(tiny_checkpoint, "SelfCascadeUpsamplerLoader",
                                         VALID["SelfCascadeUpsamplerLoader"][0]))
    assert kind == "ok", text


@pytest.mark.parametrize("name", sorted(TRAIN_LINKS))
def test_train_node_link_inputs_are_type_checked(fuzz_server, client, tiny_checkpoint, name):
    """A literal where the training node expects a VAE, CLIP or CONDITIONING reaches the node (ComfyUI
    does not check literals for these types); its error must name the input, not an attribute."""
    inputs = dict(VALID["SelfCascadeTrainUpsamplers"][0], save_name=f"fuzz_literal_{name}", **{name: 5})
    kind, text = _outcome(client, _graph(tiny_checkpoint, "SelfCascadeTrainUpsamplers", inputs))
    assert kind in ("rejected", "failed") and f"'{name}'" in text, (kind, text[:400])
