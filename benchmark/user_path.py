"""The user path on a GPU, as users run it: the real ComfyUI server with the pack, the shipped workflows queued
through the shipped client (workflows/api/queue_workflow.py), time to image, peak device memory and output.

    python benchmark/user_path.py --out OUT --budget-s 270     # CUDA machine: full-size random checkpoints
    python benchmark/user_path.py --smoke --out /tmp/up        # CPU check of every code path at tiny sizes

Nothing is downloaded: a random-weight SD1.5 and SDXL checkpoint (full size: UNet, text encoders, VAE in the
files' own key layout) and an official-layout SDXL ``upsampler_only.pth`` are written into ``--work`` first
(benchmark/perf/checkpoints.py, on the GPU, in a subprocess). Cost does not depend on the weights; the images
are noise. Server configurations (``--configs``), each a fresh server:

- ``default``: no flags (the whole GPU): sd15_cascade_2048, sd15_image_cascade_2048, sdxl_cascade_4096 at the
  shipped steps;
- ``8gb``, ``12gb``: an emulated smaller card: ComfyUI's ``--reserve-vram`` (total - card GiB: ComfyUI plans,
  offloads and partially loads for that card) and the CUDA allocator capped at the card's size (so what would
  not fit fails); the CUDA context (~0.5 GiB on a real card) is not counted;
- ``lowvram``: ComfyUI's ``--lowvram`` on the whole GPU.

The emulated configurations run ``--mem-steps`` steps (default 10; peak memory does not depend on the step
count, time does: their times are not the default row's). Per workflow: time to image (the client's own
queue-to-result time, first prompt of a checkpoint on a server = cold, model load included), peak allocated
CUDA memory up to the first VAE decode (sampling, text encoders and model loads included) and during the tiled
decode, the allocator's reserved peak and ``nvidia-smi``'s peak (the server process's share, context included),
the image size. ``table.md`` and ``results.json`` are rewritten after every row; ``--budget-s`` is checked
before every server start and row (a row that does not fit is skipped and listed), and the client's own
timeout never passes it.
"""
from __future__ import annotations

import argparse
import datetime
import json
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

try:  # as part of the pack
    from .perf import comfy_server as cs
    from .perf.runner import project_commit
except ImportError:  # as a script: benchmark/ is sys.path[0]
    from perf import comfy_server as cs
    from perf.runner import project_commit

REPO = Path(__file__).resolve().parent.parent
CLIENT = REPO / "workflows" / "api" / "queue_workflow.py"
SD15, SDXL, IMAGE = "sd15_cascade_2048", "sdxl_cascade_4096", "sd15_image_cascade_2048"
FILES = {"sd15": "random_sd15.safetensors", "sdxl": "random_sdxl.safetensors", "pth": "upsampler_only.pth"}
CONFIGS = {"default": dict(flags=[], card=None, workflows=[SD15, IMAGE, SDXL]),
           "8gb": dict(flags=[], card=8.0, workflows=[SDXL, SD15]),
           "12gb": dict(flags=[], card=12.0, workflows=[SDXL, SD15]),
           "lowvram": dict(flags=["--lowvram"], card=None, workflows=[SDXL, SD15])}
#: first guesses of a row's seconds (full size, shipped steps) until a row of the workflow has run; server start
GUESS = {SD15: 30.0, IMAGE: 25.0, SDXL: 90.0, "start": 35.0}
SLOWER = {"default": 1.0, "12gb": 1.5, "8gb": 2.5, "lowvram": 2.5}
SHIPPED_STEPS = 30  # the shipped workflows' steps (the estimates scale the sampling part, ~70% of a row, with steps)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="folder for table.md, results.json, user_path.log")
    p.add_argument("--work", type=Path, default=Path("/tmp/self_cascade_user_path"),
                   help="checkpoints, the server's base folder and the images (large; not under --out)")
    p.add_argument("--smoke", action="store_true", help="CPU server, stripped SD1.5 checkpoint, 32 px base, 2 steps")
    p.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, in order: {', '.join(CONFIGS)}")
    p.add_argument("--workflows", default=f"{SD15},{IMAGE},{SDXL}", help="comma-separated subset of the shipped three")
    p.add_argument("--steps", type=int, default=None, help="steps of every sampler (default: the workflows' own)")
    p.add_argument("--mem-steps", type=int, default=10, help="steps in the emulated-card and --lowvram configs")
    p.add_argument("--base-px", type=int, default=None, help="base width/height override (smoke: 32)")
    p.add_argument("--budget-s", type=float, default=300.0, help="time budget of the whole run, builds included")
    p.add_argument("--sd15-checkpoint", type=Path, help="use this SD1.5-shaped file instead of building one")
    p.add_argument("--sdxl-checkpoint", type=Path, help="use this SDXL-shaped file instead of building one")
    p.add_argument("--sdxl-upsampler", type=Path, help="with --sdxl-checkpoint: its upsampler file")
    p.add_argument("--build", help=argparse.SUPPRESS)  # internal: FAMILY:LAYOUT:PATH or pth:PATH (subprocess)
    a = p.parse_args(argv)
    if a.smoke:
        a.base_px, a.steps, a.mem_steps = a.base_px or 32, a.steps or 2, min(a.mem_steps, 2)
    return a


def build_one(spec: str) -> None:
    """In a subprocess (CUDA stays out of the measuring process): write one checkpoint file."""
    import hostenv
    import torch

    hostenv.start(cpu=not torch.cuda.is_available())
    from self_cascade.benchmark.perf import checkpoints

    kind, _, rest = spec.partition(":")
    if kind == "pth":
        info = checkpoints.write_official_pth(rest)
    else:
        layout, _, path = rest.partition(":")
        info = checkpoints.write_checkpoint(path, kind, layout, device="cuda" if torch.cuda.is_available() else "cpu")
    print(json.dumps(info))


class Run:
    def __init__(self, args: argparse.Namespace, argv: list[str]):
        self.args, self.t0 = args, time.monotonic()
        self.out, self.work = args.out, args.work
        self.out.mkdir(parents=True, exist_ok=True)
        (self.work / "models" / "checkpoints").mkdir(parents=True, exist_ok=True)
        (self.work / "models" / "self_cascade").mkdir(parents=True, exist_ok=True)
        names, total = cs.nvidia_smi("name"), cs.nvidia_smi("memory.total")
        self.total_gib = float(total[0]) / 1024 if total else None
        self.res = dict(meta=dict(device=names[0] if names else "CPU (no CUDA)", total_gib=self.total_gib,
                                  commit=project_commit(), smoke=args.smoke, budget_s=args.budget_s,
                                  command=shlex.join(["python", "benchmark/user_path.py", *argv]),
                                  date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")),
                        builds={}, servers=[], rows=[])
        self.seconds: dict[str, float] = {}

    def left(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.t0)

    def log(self, msg: str) -> None:
        line = f"[user_path {time.monotonic() - self.t0:6.1f}s] {msg}"
        print(line, file=sys.stderr, flush=True)
        with open(self.out / "user_path.log", "a") as f:
            f.write(line + "\n")

    def write(self) -> None:
        self.res["meta"]["wall_s"] = round(time.monotonic() - self.t0, 1)
        (self.out / "results.json").write_text(json.dumps(self.res, indent=1) + "\n")
        (self.out / "table.md").write_text(table(self.res))

    def build(self, key: str, spec: str, path: Path) -> Path | None:
        if path.is_file():
            return path
        t0 = time.monotonic()
        try:
            proc = subprocess.run([sys.executable, __file__, "--out", str(self.out), "--build", spec],
                                  capture_output=True, text=True, timeout=max(30.0, self.left()))
        except subprocess.TimeoutExpired:
            proc = subprocess.CompletedProcess([], -1, "", f"build killed at the budget ({self.left():.0f}s left)")
        ok = proc.returncode == 0
        info = json.loads(proc.stdout.strip().splitlines()[-1]) if ok else {"error": proc.stderr[-1500:]}
        self.res["builds"][key] = dict(info, wall_s=round(time.monotonic() - t0, 1))
        self.log(f"build {key}: {'ok' if ok else 'FAILED'} in {time.monotonic() - t0:.0f}s {info if ok else ''}")
        if not ok:
            self.log(proc.stderr[-1500:])
        self.write()
        return path if ok else None

    def prepare(self) -> dict[str, str]:
        """Checkpoint / upsampler names in the server's models folders, and the input image."""
        a, ck, us = self.args, self.work / "models" / "checkpoints", self.work / "models" / "self_cascade"
        have = {}
        layout = "stripped" if a.smoke else "full"
        if a.sd15_checkpoint:
            link = ck / a.sd15_checkpoint.name
            if not link.exists():
                link.symlink_to(a.sd15_checkpoint.resolve())
            have["sd15"] = link.name
        elif self.build("sd15", f"SD15:{layout}:{ck / FILES['sd15']}", ck / FILES["sd15"]):
            have["sd15"] = FILES["sd15"]
        if a.sdxl_checkpoint:
            for src, folder in ((a.sdxl_checkpoint, ck), (a.sdxl_upsampler, us)):
                link = folder / src.name
                if not link.exists():
                    link.symlink_to(src.resolve())
            have["sdxl"], have["pth"] = a.sdxl_checkpoint.name, a.sdxl_upsampler.name
        elif not a.smoke:
            if self.build("sdxl", f"SDXL:full:{ck / FILES['sdxl']}", ck / FILES["sdxl"]):
                have["sdxl"] = FILES["sdxl"]
            if self.build("pth", f"pth:{us / FILES['pth']}", us / FILES["pth"]):
                have["pth"] = FILES["pth"]
        from PIL import Image

        side = a.base_px or 512
        img = Image.linear_gradient("L").resize((side, side)).convert("RGB")
        self.image = self.work / f"input_{side}.png"
        img.save(self.image)
        return have

    def client(self, wf: str, server, have: dict, steps: int | None, timeout: float) -> dict:
        a = self.args
        cmd = [sys.executable, str(CLIENT), wf, "--server", server.url, "--out", str(self.work / "images"),
               "--checkpoint", have["sdxl" if wf == SDXL else "sd15"], "--progress-every", "30",
               "--timeout", f"{timeout:.0f}", "--seed", "1"]
        cmd += ["--steps", str(steps)] if steps else []
        cmd += ["--width", str(a.base_px), "--height", str(a.base_px)] if a.base_px and wf != IMAGE else []
        cmd += ["--upsampler", have["pth"]] if wf == SDXL else []
        cmd += ["--image", str(self.image)] if wf == IMAGE else []
        t0 = time.monotonic()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 30)
        except subprocess.TimeoutExpired:
            return dict(wall_s=round(time.monotonic() - t0, 2), status="failed", note=f"client killed after {timeout + 30:.0f}s")
        rec = dict(wall_s=round(time.monotonic() - t0, 2), rc=proc.returncode)
        m = re.search(r"done in ([0-9.]+)s", proc.stderr)
        rec["time_to_image_s"] = float(m.group(1)) if m else None
        saved = [Path(x) for x in proc.stdout.split() if x.endswith(".png")]
        if proc.returncode == 0 and saved:
            from PIL import Image

            with Image.open(saved[-1]) as im:
                rec.update(status="done", image=f"{im.width}x{im.height}", png_mb=round(saved[-1].stat().st_size / 1e6, 1))
            saved[-1].unlink()  # noise images of up to 4096 px: kept out of the disk budget
        else:
            err = [ln for ln in proc.stderr.splitlines() if ln.startswith("error")] or proc.stderr.splitlines()[-3:]
            rec.update(status="failed", note=" ".join(err)[-600:].replace("|", "/"))
        return rec

    def config(self, name: str, have: dict) -> None:
        a, cfg = self.args, CONFIGS[name]
        flags, cap, note = list(cfg["flags"]), None, ""
        if cfg["card"]:
            if self.total_gib:
                flags += ["--reserve-vram", f"{self.total_gib - cfg['card']:.2f}"]
                cap = cfg["card"]
            else:
                note = "no CUDA: card not emulated"
        steps = a.steps if name == "default" else (a.mem_steps or a.steps)
        wfs = [w for w in cfg["workflows"] if w in a.workflows.split(",")]

        def skip(wf: str, why: str, status: str = "skipped") -> None:
            why = " / ".join(ln.strip() for ln in why.splitlines() if ln.strip())[-400:].replace("|", "/")
            self.res["rows"].append(dict(config=name, workflow=wf, steps=steps, status=status, note=why))
            self.log(f"{name} {wf}: {status} ({why})")

        est_start = self.seconds.get("start", GUESS["start"])
        why = None
        if "--lowvram" in flags and self.total_gib is None:
            why = "no CUDA: ComfyUI refuses --lowvram with --cpu"
        elif self.left() < est_start + 10:
            why = f"over budget (server start ~{est_start:.0f}s, {self.left():.0f}s left)"
        if why:
            for wf in wfs:
                skip(wf, why)
            return self.write()
        t0 = time.monotonic()
        base_used = float((cs.nvidia_smi() or ["nan"])[0])
        try:
            server = cs.start(self.work, flags, cpu=self.total_gib is None, cap_gib=cap,
                              timeout=max(30.0, self.left() - 5))
        except RuntimeError as e:
            for wf in wfs:
                skip(wf, f"server did not start: {str(e)[-300:]}", "failed")
            return self.write()
        self.seconds["start"] = time.monotonic() - t0
        srv = dict(config=name, flags=flags, cap_gib=cap, start_s=round(self.seconds["start"], 1), note=note,
                   system_stats=cs.call(server, "/system_stats").get("devices"), probe=cs.probe(server))
        loaded: set[str] = set()
        self.res["servers"].append(srv)
        self.log(f"server {name} {flags} cap {cap} up in {self.seconds['start']:.0f}s")
        try:
            for wf in wfs:
                if wf not in (SD15, IMAGE, SDXL) or ("sdxl" if wf == SDXL else "sd15") not in have:
                    skip(wf, "no checkpoint for it in this run")
                    continue
                est = self.seconds.get(wf, GUESS[wf]) * SLOWER[name] * (0.3 + 0.7 * (steps or SHIPPED_STEPS) /
                                                                          (a.steps or SHIPPED_STEPS))
                if self.left() < min(est, 0.9 * self.args.budget_s):
                    skip(wf, f"over budget (est. {est:.0f}s, {self.left():.0f}s left)")
                    continue
                cs.probe(server, reset=True)
                with cs.MemoryPoller() as poll:
                    rec = self.client(wf, server, have, steps, timeout=max(10.0, self.left() - 15))
                probe = cs.probe(server)
                ckpt = "sdxl" if wf == SDXL else "sd15"
                rec.update(config=name, workflow=wf, steps=steps, note=rec.get("note", note), cold=ckpt not in loaded,
                           sampling_peak_mib=probe.get("sampling_peak_mib"), decode_peak_mib=probe.get("decode_peak_mib"),
                           reserved_peak_mib=probe.get("peak_reserved_mib"), decode_s=round(probe.get("decode_s") or 0, 2),
                           smi_peak_mib=None if poll.peak is None else round(poll.peak - base_used))
                loaded.add(ckpt)
                if rec["status"] == "done" and name == "default":
                    self.seconds[wf] = rec["wall_s"]
                self.res["rows"].append(rec)
                self.log(f"{name} {wf}: {rec['status']} in {rec['wall_s']:.0f}s {rec.get('note', '')}")
                self.write()
        finally:
            server.stop()
            srv["log_tail"] = server.log()[-1500:]
            self.write()

    def main(self) -> dict:
        have = self.prepare()
        for name in [c.strip() for c in self.args.configs.split(",") if c.strip()]:
            if name not in CONFIGS:
                raise SystemExit(f"--configs: choose from {list(CONFIGS)}")
            self.config(name, have)
        self.write()
        return self.res


def _f(x, fmt: str = ".0f") -> str:
    return "n/a" if x is None else format(x, fmt)


def table(res: dict) -> str:
    m = res["meta"]
    out = (["> **SMOKE RUN** (CPU, stripped / tiny checkpoints, 32 px base): checks the code path; its figures "
            "say nothing about real cost.\n"] if m["smoke"] else [])
    out += [f"# User path: {m['device']}" + (f" ({m['total_gib']:.0f} GiB)" if m["total_gib"] else ""), "",
            f"Command: `{m['command']}`  ", f"Date: {m['date']}; wall {m.get('wall_s', 0):.0f} s (budget "
            f"{m['budget_s']:.0f} s); commit {m['commit']}", "",
            "Random-weight checkpoints (images are noise). Time to image: the shipped client's queue-to-result "
            "time (cold = the server's first prompt with that checkpoint: load included). Peaks in MiB: CUDA memory "
            "allocated up to the first VAE decode (sampling, text encoders, loads) and during the tiled decode; the "
            "allocator's reserved peak; nvidia-smi's peak above what the device held before the server started.", "",
            "| config | workflow | steps | status | time to image s | image | PNG MB | sampling peak | decode peak | "
            "reserved peak | nvidia-smi peak | note |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        out.append(f"| {r['config']} | {r['workflow']} | {r['steps'] or 'shipped'} | {r['status']} | "
                   f"{_f(r.get('time_to_image_s'), '.1f')}{' (cold)' if r.get('cold') else ''} | {r.get('image', '')} | {r.get('png_mb', '')} | "
                   f"{_f(r.get('sampling_peak_mib'))} | {_f(r.get('decode_peak_mib'))} | "
                   f"{_f(r.get('reserved_peak_mib'))} | {_f(r.get('smi_peak_mib'))} | {r.get('note', '')} |")
    def server(s: dict) -> str:
        p = s.get("probe") or {}
        cap = f", allocator cap {s['cap_gib']:g} GiB" if s["cap_gib"] else ""
        cap += f" (NOT SET: {p['cap_error']})" if p.get("cap_error") else ""
        alloc = f", allocator {p['allocator']}" if p.get("allocator") else ""
        return f"{s['config']} {' '.join(s['flags']) or '(no flags)'}{cap}{alloc} up in {s['start_s']:.0f} s"
    out += ["", "Servers: " + "; ".join(server(s) for s in res["servers"]),
            "", "Builds: " + "; ".join(f"{k}: {v.get('params', 0) / 1e6:.0f} M params, {v.get('bytes', 0) / 1e9:.2f} GB "
                                      f"in {v['wall_s']:.0f} s" if "error" not in v else f"{k}: FAILED"
                                      for k, v in res["builds"].items())]
    return "\n".join(out) + "\n"


def main(argv=None) -> dict | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.build:
        return build_one(args.build)
    return Run(args, argv).main()


if __name__ == "__main__":
    main()
