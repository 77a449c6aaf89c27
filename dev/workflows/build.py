"""Generate the shipped workflows (UI format in workflows/, API twins in workflows/api/) from one
description each, so the two formats cannot drift. Run by hand after a node's inputs change:

    .host/venv/bin/python dev/workflows/build.py            # starts a real server for /object_info
    .host/venv/bin/python dev/workflows/build.py --object-info info.json

Widget order comes from the live server's /object_info. A graph whose node types the server does
not list is skipped with a warning (its files are left as they are). Each written graph also gets
its thumbnail (a PIL diagram of the graph, thumbnails.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
OUT = REPO / "workflows"  # what users drag into ComfyUI; this generator stays out of it
from graph import Graph, out, to_api, to_ui  # noqa: E402  (this folder is sys.path[0] when run as a script)
from thumbnails import write_thumbnail  # noqa: E402

SD15_CKPT = "v1-5-pruned-emaonly.safetensors"
SDXL_CKPT = "sd_xl_base_1.0.safetensors"
FLUX_CKPT = "flux1-dev-fp8.safetensors"  # checkpoint with CLIP-L, T5 and VAE (ComfyUI's Flux examples)
SD3_CKPT = "sd3.5_large_fp8_scaled.safetensors"  # checkpoint with its text encoders (ComfyUI's SD3.5 examples)
OFFICIAL_UPSAMPLERS = "upsampler_only.pth"
UNTRAINED_TITLE = "Untrained Upsamplers (experimental)"
HF = "https://huggingface.co"
DOCS = "https://github.com/self-cascade/comfyui-self-cascade/blob/main/docs"  # notes link docs in full
OFFICIAL_UPSAMPLERS_URL = f"{HF}/NothingSpecialSiri/SelfCascade-SDXL/resolve/main/{OFFICIAL_UPSAMPLERS}"
#: Download entries for the frontend's missing-models dialog (``properties.models`` of the loader nodes).
#: The dialog downloads only names ending in .safetensors / .sft (other suffixes show as an error), so
#: the official .pth set is not an entry: the SDXL workflow's note carries its link and folder instead.
MODEL_URLS = {
    SD15_CKPT: (f"{HF}/stable-diffusion-v1-5/stable-diffusion-v1-5/resolve/main/{SD15_CKPT}", "checkpoints"),
    SDXL_CKPT: (f"{HF}/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/{SDXL_CKPT}", "checkpoints"),
    FLUX_CKPT: (f"{HF}/Comfy-Org/flux1-dev/resolve/main/{FLUX_CKPT}", "checkpoints"),
    SD3_CKPT: (f"{HF}/Comfy-Org/stable-diffusion-3.5-fp8/resolve/main/{SD3_CKPT}", "checkpoints"),
}
DOWNLOADABLE = (".safetensors", ".sft")  # what the frontend's dialog accepts (MissingModelsWarning.vue)
#: K for flow models: the K whose sigma has the SNR of SD's K=700 (0.090), (1 - s)^2 / s^2 = 0.090,
#: i.e. sigma 0.769, at each family's default shift (docs/TUNING_FREE.md; checked by the tests).
K_FLUX = 513.0  # ModelSamplingFlux, shift 1.15 (FLUX.1 dev)
K_SD3 = 526.0  # ModelSamplingDiscreteFlow, shift 3.0 (SD3 / SD3.5)
POSITIVE = "a photograph of a lighthouse on a rocky coast at sunset, dramatic clouds, highly detailed, sharp focus"
NEGATIVE = "blurry, lowres, watermark, text, deformed"
SEED = 42
BASE_W = 760  # a note under the base nodes spans the base group (columns 0 and 1)
STAGES_W = 680  # a note under two stages spans them

NOTE_CASCADE = """**Self-Cascade, tuning-free.** The Base Sampler makes the {base} px image. Each Self-Cascade Stage
upsamples the previous result (the *pivot*), re-noises it to step K and denoises only the remaining
steps at twice the width and height: {sizes} px.

Knobs of each Stage:
- **K** (700): how far the pivot is re-noised. Higher: more new detail, risk of repeated objects;
  lower: closer to the pivot, softer. 600-800 is the useful range.
- **steps**: the whole schedule; a stage runs only the part below K (about K/1000 of it).
- **seed**: the noise of the re-noising; cfg, sampler and scheduler as in KSampler.
- **scale**: 2.0 per stage (4x the pixels). For any other size use Self-Cascade Upscale (to any size).
- **K_mode**: fixed (default) uses K on this model's own schedule; auto reads K in SD1.x's units and
  converts it for the connected model (same pivot signal-to-noise): use auto on Flux, SD3 or video models.

The decode is tiled so that {final} px fits in memory.
More: [choosing K, steps, seeds and sizes]({docs}/TUNING_FREE.md)."""

NOTE_UPSAMPLERS = """**EXPERIMENTAL: untrained upsamplers, unverified on Stable Diffusion.** No file needed:
Untrained Upsamplers builds a fresh set for this checkpoint's UNet (each upsampler is exactly a
nearest x2 upsample), so both stages add the pivot's own UNet features, nearest-upsampled, to the
high-resolution sample. Its **strength** output (0.5, chosen on a miniature benchmark, not on SD)
drives both stages; 0 = tuning-free. **end_timestep** (100): the upsamplers stop below this timestep.

For the paper's tuned version, train a set: the `train_upsamplers` workflow, or for large folders
[scripts/train_upsamplers.py]({docs}/TRAINING.md). Put the `.safetensors` into
`ComfyUI/models/self_cascade/`, replace this node with **Load Upsamplers** (Self-Cascade Upsampler
Loader) wired to both stages' `upsamplers`, and set their strength to 1.0. Headless,
`queue_workflow.py ... --upsampler FILE` does that swap."""

NOTE_SDXL = """**SDXL 1024 -> 2048 -> 4096 with the official Self-Cascade upsamplers.**

This needs one file that ComfyUI's download dialog cannot fetch (a `.pth`): download
[upsampler_only.pth]({url}) (145 M parameters, from
[NothingSpecialSiri/SelfCascade-SDXL]({repo}), linked from the official code
[GuoLanqing/Self-Cascade](https://github.com/GuoLanqing/Self-Cascade)) into
`ComfyUI/models/self_cascade/`, press R to refresh, and pick it in **Load Upsamplers**.
The first load converts it (weights-only) and caches `upsampler_only.converted.safetensors` beside it.
If the error says weights-only loading refused the file and you trust it, convert it once, in the
pack's folder: `python scripts/convert_official_upsamplers.py --trust-pickle
ComfyUI/models/self_cascade/upsampler_only.pth`.

Size conditioning: the prompts' width/height and target_width/target_height stay at the BASE size
(1024): SDXL was trained there and every stage reuses the same conditioning; crop_w/crop_h = 0."""

NOTE_COMPOSABLE = """**Composable form of one Self-Cascade stage, for power users.**
Pivot Upsample (x2) -> Renoise (re-noises the pivot to step K; outputs the noised latent and the
remaining SIGMAS) -> SamplerCustomAdvanced with DisableNoise (the noise is already in the latent),
any guider and sampler. Chain the block again for the next stage. For the tuned variant put
Self-Cascade Apply Upsamplers on the model (pivot = the Pivot Upsample output).
More: [the nodes]({docs}/NODES.md)."""

NOTE_TRAIN = """**Train Self-Cascade upsamplers** from a folder of high-resolution images (the base model stays frozen).
- **folder**: a subfolder of `ComfyUI/input/` with the images (and optional same-name `.txt` captions);
  **prompt** is used for images without a caption.
- **width/height**: the training crop = the HIGH-resolution stage size (e.g. 1024 for SD1.5, 2x
  native); every image must be at least that big. **scale** 2.0: the pivot is the crop downsampled 2x.
- **steps**: the paper adapts in about 10k; a few hundred on a handful of images already help.
- **K / end_timestep**: use the values you sample with (700 / 100).
- **save_name**: written to `ComfyUI/models/self_cascade/<save_name>.safetensors` (never overwritten
  unless resume is on); it then appears in Load Upsamplers (in `sd15_cascade_2048_upsamplers`, swap
  the untrained node for it; headless: `queue_workflow.py sd15_cascade_2048_upsamplers --upsampler FILE`).
- Cancel keeps a resumable checkpoint; set **resume** to continue. The loss curve is saved as an image.

More: [training, cost and cancelling]({docs}/TRAINING.md)."""


def _base(g: Graph, ckpt: str, size: int, note: str, steps: int = 30, cfg: float = 7.5, sdxl: bool = False,
          note_title: str = "Read me: how the cascade works, choosing K"):
    """Checkpoint, prompts, empty latent and KSampler in a group "Base", with ``note`` under them."""
    ck = g.add("CheckpointLoaderSimple", "Load Checkpoint", 0, 0, ckpt_name=ckpt)
    if sdxl:
        sz = dict(width=size, height=size, crop_w=0, crop_h=0, target_width=size, target_height=size)
        pos = g.add("CLIPTextEncodeSDXL", "Positive Prompt", 1, 0, 400, clip=out(ck, 1), text_g=POSITIVE,
                    text_l=POSITIVE, **sz)
        neg = g.add("CLIPTextEncodeSDXL", "Negative Prompt", 1, 1, 400, clip=out(ck, 1), text_g=NEGATIVE,
                    text_l=NEGATIVE, **sz)
    else:
        pos = g.add("CLIPTextEncode", "Positive Prompt", 1, 0, 400, clip=out(ck, 1), text=POSITIVE)
        neg = g.add("CLIPTextEncode", "Negative Prompt", 1, 1, 400, clip=out(ck, 1), text=NEGATIVE)
    lat = g.add("EmptyLatentImage", "Base Latent", 0, 1, width=size, height=size, batch_size=1)
    ks = g.add("KSampler", "Base Sampler", 1, 2, 400, model=out(ck, 0), positive=out(pos), negative=out(neg),
               latent_image=out(lat), seed=SEED, steps=steps, cfg=cfg, sampler_name="euler", scheduler="normal",
               denoise=1.0)
    g.group(f"Base {size}px", [ck, pos, neg, lat, ks, g.note(note_title, note, 0, 3, BASE_W)])
    return ck, pos, neg, ks


def _stages(g: Graph, ck, pos, neg, latent, sizes: list[int], ups=None, steps: int = 30, cfg: float = 7.5,
            K: float = 700.0, scheduler: str = "normal", col: float = 2.3, strength=1.0):
    prev = latent
    for i, size in enumerate(sizes):
        extra = {"upsamplers": out(ups)} if ups is not None else {}
        prev = g.add("SelfCascadeStage", f"Stage {i + 1}: {size}px", col + i * 1.0, 0, model=out(ck, 0),
                     positive=out(pos), negative=out(neg), latent=out(prev), scale=2.0, upscale_method="bicubic",
                     seed=SEED + 1 + i, steps=steps, cfg=cfg, sampler_name="euler", scheduler=scheduler, K=K,
                     strength=strength, end_timestep=100.0, **extra)
    return prev


def _finish(g: Graph, latent, vae_src, prefix: str, col: float, members: list):
    dec = g.add("VAEDecodeTiled", "Decode (tiled)", col, 0, samples=out(latent), vae=out(vae_src, 2),
                tile_size=512, overlap=64, temporal_size=64, temporal_overlap=8)
    save = g.add("SaveImage", "Save", col, 1, 400, images=out(dec), filename_prefix=prefix)
    g.group("Self-Cascade stages", members)
    g.group("Decode and save", [dec, save], "#8a8")
    return save


def _stage_nodes(g: Graph) -> list:
    return [n for n in g.nodes if n.type == "SelfCascadeStage"]


def sd15_cascade_2048(upsamplers: bool = False) -> Graph:
    g = Graph("sd15_cascade_2048_upsamplers" if upsamplers else "sd15_cascade_2048")
    ck, pos, neg, ks = _base(g, SD15_CKPT, 512, NOTE_CASCADE.format(base="512", sizes="512 -> 1024 -> 2048",
                                                                    final="2048", docs=DOCS))
    # No SD1.5 set is published: the untrained node (no file) feeds both stages, its strength output
    # drives their strength (the widget keeps 0.5, the node's value, if the link is removed).
    ups = g.add("SelfCascadeUntrainedUpsamplers", UNTRAINED_TITLE, 2.3, 1, model=out(ck, 0)) if upsamplers else None
    last = _stages(g, ck, pos, neg, ks, [1024, 2048], ups, strength=out(ups, 1, shown=0.5) if ups else 1.0)
    members = _stage_nodes(g) + ([ups, g.note("Read me: EXPERIMENTAL untrained upsamplers; how to use a trained set",
                                                      NOTE_UPSAMPLERS.format(docs=DOCS), 2.3, 2, STAGES_W)] if ups else [])
    _finish(g, last, ck, f"self_cascade/{g.name}", 4.4, members)
    return g


def sdxl_cascade_4096() -> Graph:
    g = Graph("sdxl_cascade_4096")
    ck, pos, neg, ks = _base(g, SDXL_CKPT, 1024, NOTE_CASCADE.format(base="1024", sizes="1024 -> 2048 -> 4096",
                                                                     final="4096", docs=DOCS),
                             steps=30, cfg=7.0, sdxl=True)
    ups = g.add("SelfCascadeUpsamplerLoader", "Load Upsamplers", 2.3, 1, upsampler_name=OFFICIAL_UPSAMPLERS)
    last = _stages(g, ck, pos, neg, ks, [2048, 4096], ups, cfg=7.0)
    text = NOTE_SDXL.format(url=OFFICIAL_UPSAMPLERS_URL, repo=f"{HF}/NothingSpecialSiri/SelfCascade-SDXL")
    note = g.note("Read me first: download upsampler_only.pth by hand (link inside)", text, 2.3, 2, STAGES_W)
    _finish(g, last, ck, "self_cascade/sdxl_cascade_4096", 4.4, _stage_nodes(g) + [ups, note])
    return g


NOTE_IMAGE = """**Upscale an EXISTING image with Self-Cascade**: Load Image -> VAE Encode -> Stage -> Stage -> tiled decode.
The loaded image is the first pivot. Each stage doubles each side (4x the pixels): a 512 px image
becomes 1024, then 2048 px. Start from about the model's native size (SD1.5: 512, SD2.1: 768); for a
1024 px image remove one stage. Sides must be multiples of 8 (resize first otherwise).
Describe the image in the prompt: the stages denoise towards it.

Choosing **K** for an existing image (how far the image is re-noised before the stage redraws it):
- 500-600: keeps composition, colours and identity; adds detail and sharpness (good for photos).
- 700 (paper default): right when the image came from this model at its base size.
- above 750: the model may change content and faces; repeats become possible.

Lower K also runs fewer steps (a stage runs about K/1000 of **steps**). Headless, in the pack's folder:
`python workflows/api/queue_workflow.py sd15_image_cascade_2048 --image my.png --prompt "..."`.
More: [choosing K]({docs}/TUNING_FREE.md)."""

NOTE_FLOW = """**{family}, tuning-free Self-Cascade**: {base} -> {final} px in one stage.
Guidance: {guidance}

**K for flow models**: K picks a point of the model's own (shifted) schedule, so K=700 here would
re-noise much harder than on SD (signal-to-noise ratio {snr700} against SD's 0.090 at t=700).
K={K:g} gives SD's 0.090 at this model's default shift ({shift}).
Or set the Stage's **K_mode** to auto and K to 700: the Stage then computes this K from the model itself.
A ModelSampling node with another shift (e.g. ModelSamplingFlux at the high-res size) moves this:
recompute K (or use auto), or apply the shift node only to the base sampler.
The decode is tiled so that {final} px fits in memory.
More: [recommended K for flow models]({docs}/TUNING_FREE.md#recommended-k-for-flow-models-sd3-flux)."""


def sd15_image_cascade_2048() -> Graph:
    g = Graph("sd15_image_cascade_2048")
    ck = g.add("CheckpointLoaderSimple", "Load Checkpoint", 0, 0, ckpt_name=SD15_CKPT)
    pos = g.add("CLIPTextEncode", "Positive Prompt", 1, 0, 400, clip=out(ck, 1), text=POSITIVE)
    neg = g.add("CLIPTextEncode", "Negative Prompt", 1, 1, 400, clip=out(ck, 1), text=NEGATIVE)
    img = g.add("LoadImage", "Input Image", 0, 1, image="example.png")
    enc = g.add("VAEEncode", "Encode Image", 1, 2, 400, pixels=out(img), vae=out(ck, 2))
    note = g.note("Read me: your image, choosing K", NOTE_IMAGE.format(docs=DOCS), 0, 3, BASE_W)
    g.group("Your image", [ck, pos, neg, img, enc, note])
    last = _stages(g, ck, pos, neg, enc, [1024, 2048], K=600.0)
    _finish(g, last, ck, "self_cascade/sd15_image_cascade_2048", 4.4, _stage_nodes(g))
    return g


def _flow(name: str, ckpt: str, note: str, guidance: float | None, cfg: float, steps: tuple[int, int], K: float,
          scheduler: str) -> Graph:
    """Flux / SD3: base 1024 (EmptySD3LatentImage) -> one Stage to 2048; Flux adds FluxGuidance."""
    g = Graph(name)
    ck = g.add("CheckpointLoaderSimple", "Load Checkpoint", 0, 0, ckpt_name=ckpt)
    pos = g.add("CLIPTextEncode", "Positive Prompt", 1, 0, 400, clip=out(ck, 1), text=POSITIVE)
    cond = pos
    if guidance is not None:
        cond = g.add("FluxGuidance", "Flux Guidance", 1, 1, 400, conditioning=out(pos), guidance=guidance)
    neg = g.add("CLIPTextEncode", "Negative Prompt", 1, 2, 400, clip=out(ck, 1),
                text="" if guidance is not None else NEGATIVE)
    lat = g.add("EmptySD3LatentImage", "Base Latent", 0, 1, width=1024, height=1024, batch_size=1)
    ks = g.add("KSampler", "Base Sampler", 1, 3, 400, model=out(ck, 0), positive=out(cond), negative=out(neg),
               latent_image=out(lat), seed=SEED, steps=steps[0], cfg=cfg, sampler_name="euler", scheduler=scheduler,
               denoise=1.0)
    g.group("Base 1024px", [*g.nodes, g.note(f"Read me: guidance, and K {K:g} for this model", note, 0, 4,
                                             BASE_W)])
    last = _stages(g, ck, cond, neg, ks, [2048], steps=steps[1], cfg=cfg, K=K, scheduler=scheduler)
    _finish(g, last, ck, f"self_cascade/{name}", 3.4, _stage_nodes(g))
    return g


def flux_cascade_2048() -> Graph:
    note = NOTE_FLOW.format(family="FLUX.1 dev", base=1024, final=2048, K=K_FLUX, snr700="0.018", docs=DOCS,
                            shift="ModelSamplingFlux, shift 1.15",
                            guidance="cfg 1.0 in KSampler and Stage (FLUX.1 dev is guidance-distilled); the\n"
                                     "strength of the prompt is FluxGuidance (3.5) on the positive conditioning, "
                                     "which both use.\nThe negative prompt has no effect at cfg 1.")
    return _flow("flux_cascade_2048", FLUX_CKPT, note, 3.5, 1.0, (20, 30), K_FLUX, "simple")


def sd3_cascade_2048() -> Graph:
    note = NOTE_FLOW.format(family="SD3.5 Large", base=1024, final=2048, K=K_SD3, snr700="0.020", docs=DOCS,
                            shift="ModelSamplingDiscreteFlow, shift 3.0",
                            guidance="SD3 uses real classifier-free guidance: cfg 4.5 in KSampler and Stage\n"
                                     "(3.5-5.5 is the usual range), with a negative prompt.")
    return _flow("sd3_cascade_2048", SD3_CKPT, note, None, 4.5, (30, 40), K_SD3, "sgm_uniform")


def composable_pivot_renoise() -> Graph:
    g = Graph("composable_pivot_renoise")
    ck, pos, neg, ks = _base(g, SD15_CKPT, 512, NOTE_COMPOSABLE.format(docs=DOCS),
                             note_title="Read me: one stage built from its parts")
    piv = g.add("SelfCascadePivotUpsample", "Pivot Upsample (x2)", 2.3, 0, latent=out(ks), scale=2.0,
                upscale_method="bicubic", width=0, height=0)
    ren = g.add("SelfCascadeRenoise", "Renoise to K", 2.3, 1, model=out(ck, 0), latent=out(piv), K=700.0,
                noise_seed=SEED + 1, steps=30, scheduler="normal")
    noise = g.add("DisableNoise", "No Extra Noise", 2.3, 2)
    guider = g.add("CFGGuider", "Guider", 3.3, 0, model=out(ck, 0), positive=out(pos), negative=out(neg), cfg=7.5)
    sampler = g.add("KSamplerSelect", "Sampler", 3.3, 1, sampler_name="euler")
    adv = g.add("SamplerCustomAdvanced", "Stage 1: 1024px", 3.3, 2, noise=out(noise), guider=out(guider),
                sampler=out(sampler), sigmas=out(ren, 1), latent_image=out(ren, 0))
    _finish(g, adv, ck, "self_cascade/composable_pivot_renoise", 4.4, [piv, ren, noise, guider, sampler, adv])
    return g


def train_upsamplers() -> Graph:
    g = Graph("train_upsamplers")
    # the note on the left: at fit-view the minimap covers the bottom right of the graph
    note = g.note("Read me: the training settings", NOTE_TRAIN.format(docs=DOCS), 0, 0, 700)
    ck = g.add("CheckpointLoaderSimple", "Load Checkpoint", 2.1, 0, ckpt_name=SD15_CKPT)
    tr = g.add("SelfCascadeTrainUpsamplers", "Train Upsamplers", 3.1, 0, 380, model=out(ck, 0), vae=out(ck, 2),
               clip=out(ck, 1), folder="self_cascade_train", prompt="a high resolution photograph",
               caption_dropout=0.1, width=1024, height=1024, scale=2.0, steps=1000, learning_rate=5e-5,
               batch_size=1, K=700.0, end_timestep=100.0, pivot_mode="downsample", variant="official",
               variant_size=0, seed=0, save_name="sd15_upsamplers", checkpoint_every=100, resume=False)
    save = g.add("SaveImage", "Save Loss Curve", 4.3, 0, 400, images=out(tr, 1),
                 filename_prefix="self_cascade/train_loss")
    g.group("Training", [note, ck, tr, save])
    return g


#: Readable title and one-line summary of each workflow, drawn large on its thumbnail: the templates browser
#: titles a pack's templates with their file names (which the client and the docs use, so they stay).
TITLES = {
    "sd15_cascade_2048": ("SD1.5 / 2.1: 512 to 2048 px", "Tuning-free cascade, two stages, no extra file"),
    "sd15_cascade_2048_upsamplers": ("SD1.5 / 2.1: 512 to 2048 px, tuned", "Untrained upsamplers (experimental), "
                                                                          "or your trained set"),
    "sdxl_cascade_4096": ("SDXL: 1024 to 4096 px", "Official upsamplers: download upsampler_only.pth (see note)"),
    "train_upsamplers": ("Train your own upsamplers", "From a folder of high-resolution images, base model frozen"),
    "composable_pivot_renoise": ("One stage from its parts", "Pivot Upsample, Renoise, SamplerCustomAdvanced"),
    "sd15_image_cascade_2048": ("Upscale your image to 4x its size", "SD1.5: Load Image, two stages, K 600"),
    "flux_cascade_2048": ("FLUX.1 dev: 1024 to 2048 px", "Tuning-free, cfg 1 + FluxGuidance, K 513"),
    "sd3_cascade_2048": ("SD3.5: 1024 to 2048 px", "Tuning-free, cfg 4.5, K 526"),
}

GRAPHS = {
    "sd15_cascade_2048": lambda: sd15_cascade_2048(False),
    "sd15_cascade_2048_upsamplers": lambda: sd15_cascade_2048(True),
    "sdxl_cascade_4096": sdxl_cascade_4096,
    "train_upsamplers": train_upsamplers,
    "composable_pivot_renoise": composable_pivot_renoise,
    "sd15_image_cascade_2048": sd15_image_cascade_2048,
    "flux_cascade_2048": flux_cascade_2048,
    "sd3_cascade_2048": sd3_cascade_2048,
}


def attach_models(g: Graph) -> Graph:
    """``properties.models`` on every node whose widget value is a file with a known download URL."""
    for node in g.nodes:
        for value in node.values.values():
            if isinstance(value, str) and value in MODEL_URLS and value.endswith(DOWNLOADABLE):
                url, directory = MODEL_URLS[value]
                node.models.append({"name": value, "url": url, "directory": directory})
    return g


def live_object_info() -> dict:
    import hostenv  # the dev host harness (dev/ is on the host venv's path)

    hostenv.start()
    from self_cascade.workflows.api.comfy_client import ComfyClient

    with tempfile.TemporaryDirectory() as tmp:
        server = hostenv.start_server(Path(tmp))
        try:
            return ComfyClient(server.url, timeout=120).object_info()
        finally:
            server.stop()


def build(info: dict, only: list[str] | None = None) -> list[str]:
    written = []
    for name, make in GRAPHS.items():
        if only and name not in only:
            continue
        g = attach_models(make())
        try:
            api, ui = to_api(g, info), to_ui(g, info)
        except KeyError as e:
            print(f"skipped {name}: {e}", file=sys.stderr)
            continue
        (OUT / f"{name}.json").write_text(json.dumps(ui, indent=2) + "\n")
        (OUT / "api" / f"{name}.json").write_text(json.dumps(api, indent=2) + "\n")
        write_thumbnail(name, ui, *TITLES[name])
        written.append(name)
    return written


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--object-info", help="a saved /object_info JSON instead of starting a server")
    ap.add_argument("--only", nargs="*", help="graph names to write")
    ap.add_argument("--thumbnails-only", action="store_true",
                    help="only redraw the thumbnails of the workflows in workflows/ (no server needed)")
    args = ap.parse_args()
    if args.thumbnails_only:
        for p in sorted(OUT.glob("*.json")):
            print(write_thumbnail(p.stem, json.loads(p.read_text()), *TITLES.get(p.stem, (p.stem,))))
        return 0
    info = json.loads(Path(args.object_info).read_text()) if args.object_info else live_object_info()
    written = build(info, args.only)
    print("wrote: " + ", ".join(written))
    return 0 if written else 1


if __name__ == "__main__":
    sys.exit(main())
