#!/usr/bin/env python3
"""Queue a Self-Cascade API workflow on a running ComfyUI, wait for it, and save its images.

Standard library only. Examples::

    python queue_workflow.py sd15_cascade_2048 --prompt "a castle on a hill" --seed 7
    python queue_workflow.py workflows/api/sdxl_cascade_4096.json --checkpoint sd_xl_base_1.0.safetensors \\
        --server http://127.0.0.1:8188 --out my_images

How overrides find their nodes (the shipped workflows follow this; your own graphs can too):

- ``--checkpoint``: ``ckpt_name`` of every ``CheckpointLoaderSimple``.
- ``--prompt`` / ``--negative``: the node titled "Positive Prompt" / "Negative Prompt"
  (``_meta.title``): ``text`` of a CLIPTextEncode, ``text_g`` and ``text_l`` of a CLIPTextEncodeSDXL.
- ``--width`` / ``--height``: the base size: the node titled "Base Latent" (EmptyLatentImage), and
  the size conditioning (width/height/target_width/target_height) of every CLIPTextEncodeSDXL.
  The cascade stages scale from there (x2 per stage).
- ``--seed``: every ``seed`` / ``noise_seed`` input (KSampler, SelfCascadeStage, SelfCascadeRenoise...).
- ``--steps``: every ``steps`` input of a sampling node (KSampler, SelfCascadeStage, SelfCascadeRenoise).
- ``--upsampler``: ``upsampler_name`` of every ``SelfCascadeUpsamplerLoader`` (a file in
  ComfyUI/models/self_cascade/). A workflow with no loader but a ``SelfCascadeUntrainedUpsamplers``
  node (``sd15_cascade_2048_upsamplers``) gets that node swapped for a loader of the file (same node
  id, so the stages' ``upsamplers`` links stay), and the inputs fed by its ``strength`` output are
  set to 1.0 (a trained set's strength).
- ``--image PATH``: a local image, uploaded to the server's input/ (``/upload/image``) and set as
  ``image`` of every ``LoadImage`` (the image-in workflow ``sd15_image_cascade_2048``).
- ``--set "TITLE.input=VALUE"``: any input of the node(s) with that title or class_type; VALUE is
  parsed as JSON when it can be (numbers, true/false), else kept as a string.

Exit codes: 0 done; 1 cannot run (server down, pack not installed, file missing, bad argument);
2 the server rejected the prompt (its validation message is printed); 3 it failed while running.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

try:  # imported as part of the pack (self_cascade.workflows.api)
    from .comfy_client import ComfyClient, ComfyError, ExecutionFailed, PromptRejected
except ImportError:  # run as a script: this folder is sys.path[0]
    from comfy_client import ComfyClient, ComfyError, ExecutionFailed, PromptRejected

HERE = Path(__file__).resolve().parent
SAMPLING_TYPES = ("KSampler", "KSamplerAdvanced", "SelfCascadeStage", "SelfCascadeRenoise", "BasicScheduler")
SEED_INPUTS = ("seed", "noise_seed")
UNTRAINED = "SelfCascadeUntrainedUpsamplers"
LOADER = "SelfCascadeUpsamplerLoader"
TRAINED_STRENGTH = 1.0  # the strength a trained set is used at (the Stage's default)


class UsageError(Exception):
    """Something the user can fix before anything is queued."""


def resolve_workflow(name: str) -> Path:
    """A path to an API-format JSON, or the stem of a shipped workflow in workflows/api/."""
    p = Path(name)
    if p.is_file():
        return p
    shipped = HERE / f"{p.stem}.json"
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(x.stem for x in HERE.glob("*.json")))
    raise UsageError(f"no workflow file {name!r}; shipped workflows: {names}")


def load_workflow(path: Path) -> dict:
    data = json.loads(Path(path).read_text())
    if "nodes" in data and "links" in data:
        raise UsageError(f"{path} is a UI-format workflow (drag it into ComfyUI); queue its API twin in workflows/api/")
    if not data or not all(isinstance(v, dict) and "class_type" in v for v in data.values()):
        raise UsageError(f"{path} is not an API-format workflow ({{id: {{class_type, inputs}}}})")
    return data


def nodes_titled(prompt: dict, title: str) -> list[dict]:
    return [n for n in prompt.values() if n.get("_meta", {}).get("title") == title or n["class_type"] == title]


def _parse_value(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def apply_overrides(prompt: dict, args: argparse.Namespace) -> list[str]:
    """Edit ``prompt`` in place from the command-line overrides; returns what was changed (for the log)."""
    done = []

    def put(node: dict, key: str, value) -> None:
        if key not in node["inputs"]:
            return
        node["inputs"][key] = value
        done.append(f"{node.get('_meta', {}).get('title', node['class_type'])}.{key}={value!r}")

    def need(title: str, flag: str) -> list[dict]:
        found = nodes_titled(prompt, title)
        if not found:
            raise UsageError(f"{flag}: this workflow has no node titled {title!r}")
        return found

    if args.checkpoint is not None:
        for n in need("CheckpointLoaderSimple", "--checkpoint"):
            put(n, "ckpt_name", args.checkpoint)
    for flag, title, value in (("--prompt", "Positive Prompt", args.prompt), ("--negative", "Negative Prompt", args.negative)):
        if value is not None:
            for n in need(title, flag):
                for key in ("text", "text_g", "text_l"):
                    put(n, key, value)
    if args.width is not None or args.height is not None:
        for n in need("Base Latent", "--width/--height"):
            for key, v in (("width", args.width), ("height", args.height)):
                if v is not None:
                    put(n, key, v)
        for n in nodes_titled(prompt, "CLIPTextEncodeSDXL"):
            for key, v in (("width", args.width), ("height", args.height),
                           ("target_width", args.width), ("target_height", args.height)):
                if v is not None:
                    put(n, key, v)
    if args.seed is not None:
        for n in prompt.values():
            for key in SEED_INPUTS:
                put(n, key, args.seed)
    if args.steps is not None:
        for n in prompt.values():
            if n["class_type"] in SAMPLING_TYPES:
                put(n, "steps", args.steps)
    if args.upsampler is not None:
        if not nodes_titled(prompt, LOADER) and nodes_titled(prompt, UNTRAINED):
            done.extend(swap_untrained_for_loader(prompt))
        if not nodes_titled(prompt, LOADER):
            raise UsageError(f"--upsampler: this workflow has no node titled {LOADER!r} (and no {UNTRAINED} node "
                             "to swap for one): it is tuning-free, there is no upsampler file to set")
        for n in nodes_titled(prompt, LOADER):
            put(n, "upsampler_name", args.upsampler)
    if args.image is not None:
        if not Path(args.image).is_file():
            raise UsageError(f"--image {args.image!r}: no such file")
        for n in need("LoadImage", "--image"):
            put(n, "image", getattr(args, "uploaded_image", None) or Path(args.image).name)
    for item in args.set or []:
        target, sep, value = item.partition("=")
        title, dot, key = target.rpartition(".")
        if not sep or not dot:
            raise UsageError(f"--set {item!r}: expected TITLE.input=VALUE")
        for n in need(title, "--set"):
            if key not in n["inputs"]:
                raise UsageError(f"--set {item!r}: node {title!r} has no input {key!r} "
                                 f"(inputs: {', '.join(n['inputs'])})")
            put(n, key, _parse_value(value))
    return done


def swap_untrained_for_loader(prompt: dict) -> list[str]:
    """Replace every untrained-upsampler node with an Upsampler Loader (same id: the ``upsamplers``
    links stay valid; ``upsampler_name`` is set by the caller). Inputs linked to its ``strength``
    output (slot 1) get ``TRAINED_STRENGTH``. Returns what changed (for the log)."""
    done = []
    for nid, node in list(prompt.items()):
        if node["class_type"] != UNTRAINED:
            continue
        title = node.get("_meta", {}).get("title", UNTRAINED)
        prompt[nid] = {"inputs": {"upsampler_name": ""}, "class_type": LOADER, "_meta": {"title": "Load Upsamplers"}}
        done.append(f"{title} (node {nid}) -> Load Upsamplers ({LOADER})")
        for other in prompt.values():
            for key, value in other["inputs"].items():
                if isinstance(value, list) and value == [nid, 1]:
                    other["inputs"][key] = TRAINED_STRENGTH
                    done.append(f"{other.get('_meta', {}).get('title', other['class_type'])}.{key}={TRAINED_STRENGTH!r}")
    return done


def check_against_server(prompt: dict, info: dict) -> None:
    """Fail early, with a fix, on node types the server lacks and on files it does not have."""
    missing = sorted({n["class_type"] for n in prompt.values()} - set(info))
    ours = [m for m in missing if m.startswith("SelfCascade")]
    if ours:
        raise UsageError(f"this ComfyUI does not have the node(s) {', '.join(ours)}: install the Self-Cascade pack "
                         "(ComfyUI-Manager, or git clone it into ComfyUI/custom_nodes and restart ComfyUI)")
    if missing:
        raise UsageError(f"this ComfyUI does not have the node(s) {', '.join(missing)}: update ComfyUI "
                         "or install the pack that provides them")
    files = {"ckpt_name": ("models/checkpoints", "--checkpoint"),
             "upsampler_name": ("models/self_cascade", "--upsampler")}
    for node in prompt.values():
        spec = {**info[node["class_type"]]["input"].get("required", {}),
                **info[node["class_type"]]["input"].get("optional", {})}
        for key, (folder, flag) in files.items():
            value = node["inputs"].get(key)
            if key not in spec or not isinstance(value, str):
                continue
            options = spec[key][0] if isinstance(spec[key][0], list) else spec[key][1].get("options", [])
            if value not in options:
                have = ", ".join(options[:10]) or "none"
                raise UsageError(f"{node['class_type']}: file {value!r} is not in ComfyUI's {folder}/ "
                                 f"(found: {have}). Put it there (or pick one with {flag}) and retry.")


def save_images(client: ComfyClient, entry: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    for img in client.output_images(entry):
        if img.get("type") != "output":
            continue  # previews (temp/) are not results
        dest = out / Path(img["filename"]).name
        dest.write_bytes(client.view(img["filename"], img.get("subfolder", ""), img.get("type", "output")))
        saved.append(dest)
    return saved


def run(args: argparse.Namespace) -> int:
    path = resolve_workflow(args.workflow)
    prompt = load_workflow(path)
    changes = apply_overrides(prompt, args)
    if args.dry_run:
        print(json.dumps(prompt, indent=1))
        return 0
    client = ComfyClient(args.server, timeout=60)
    check_against_server(prompt, client.object_info())
    if args.image is not None:  # upload once the workflow and the server are known to take it
        args.uploaded_image = client.upload_image(args.image)
        print(f"uploaded {args.image} as input/{args.uploaded_image}", file=sys.stderr)
        prompt = load_workflow(path)
        changes = apply_overrides(prompt, args)
    for c in changes:
        print(f"override: {c}", file=sys.stderr)
    prompt_id = client.queue(prompt)
    print(f"queued {path.name} as {prompt_id} on {args.server}", file=sys.stderr)
    t0 = time.monotonic()
    last = [0.0]

    def progress() -> None:
        now = time.monotonic()
        if now - last[0] >= args.progress_every:
            last[0] = now
            print(f"  {client.queue_state(prompt_id)}, {now - t0:.0f}s", file=sys.stderr)

    entry = client.wait(prompt_id, timeout=args.timeout, on_progress=progress)
    saved = save_images(client, entry, Path(args.out))
    print(f"done in {time.monotonic() - t0:.1f}s; {len(saved)} image(s):", file=sys.stderr)
    for p in saved:
        print(p)
    return 0 if saved else 3


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workflow", help="API-format JSON file, or the name of a shipped one (e.g. sd15_cascade_2048)")
    ap.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI address")
    ap.add_argument("--out", default="out", help="folder for the images (created)")
    ap.add_argument("--prompt", help="positive prompt text")
    ap.add_argument("--negative", help="negative prompt text")
    ap.add_argument("--seed", type=int, help="seed for every sampler and stage")
    ap.add_argument("--checkpoint", help="checkpoint file name in ComfyUI/models/checkpoints/")
    ap.add_argument("--width", type=int, help="base width (stage 0); the cascade multiplies it")
    ap.add_argument("--height", type=int, help="base height (stage 0)")
    ap.add_argument("--steps", type=int, help="steps of every sampler and stage")
    ap.add_argument("--upsampler", help="upsampler file name in ComfyUI/models/self_cascade/ (replaces an "
                                        "untrained-upsampler node with a loader of this file, strength 1.0)")
    ap.add_argument("--image", help="local image for the workflow's LoadImage (uploaded to the server's input/)")
    ap.add_argument("--set", action="append", metavar="TITLE.input=VALUE", help="any other input (repeatable)")
    ap.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the result")
    ap.add_argument("--progress-every", type=float, default=5.0, help="seconds between progress lines")
    ap.add_argument("--dry-run", action="store_true", help="print the prompt after overrides; queue nothing")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except PromptRejected as e:
        print(f"error: ComfyUI rejected the prompt:\n{e}", file=sys.stderr)
        return 2
    except ExecutionFailed as e:
        print(f"error: the prompt failed while running: {e}", file=sys.stderr)
        return 3
    except ComfyError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
