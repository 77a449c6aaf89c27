"""The user-path benchmark's server side: a real ComfyUI server with the pack (and the measurement-only
``vram_probe.py``) in its ``custom_nodes``, started with the flags a user would pass (``--lowvram``,
``--reserve-vram``), and the device memory read from outside (``nvidia-smi``, polled) and inside (the probe).

Standard library only in this process: it never touches CUDA itself, so what ``nvidia-smi`` reads is the
server's (after subtracting what the device held before the server started).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import hostenv  # dev/: the host harness (ServerProcess, free_port, the ComfyUI root)

PROBE = Path(__file__).resolve().parent / "vram_probe.py"


def nvidia_smi(query: str = "memory.used") -> list[str] | None:
    """One ``nvidia-smi --query-gpu`` answer per GPU, or None without nvidia-smi (a CPU machine)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, f"--query-gpu={query}", "--format=csv,noheader,nounits"], capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else None


class MemoryPoller:
    """Polls the first GPU's used memory (MiB) every ``every`` s in a thread; ``peak`` is the highest reading."""

    def __init__(self, every: float = 0.2):
        self.every, self.peak, self._stop = every, None, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            ans = nvidia_smi()
            if ans is None:
                return
            used = float(ans[0])
            self.peak = used if self.peak is None else max(self.peak, used)
            self._stop.wait(self.every)

    def __enter__(self) -> MemoryPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def start(base: Path, flags: list[str], cpu: bool, cap_gib: float | None, timeout: float = 300.0
          ) -> hostenv.ServerProcess:
    """Start ComfyUI on loopback with ``base`` as its base directory (custom_nodes: the pack, linked, and the
    probe, copied), ``flags`` appended; waits for ``/system_stats``. ``--front-end-root`` points at an empty
    folder: the API needs no frontend, and a bare GPU image lacks its package."""
    custom = base / "custom_nodes"
    custom.mkdir(parents=True, exist_ok=True)
    link = custom / hostenv.PACK_NAME
    if not link.exists():
        link.symlink_to(hostenv.REPO, target_is_directory=True)
    shutil.copyfile(PROBE, custom / "self_cascade_vram_probe.py")
    (base / "frontend").mkdir(exist_ok=True)
    port = hostenv.free_port()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(hostenv.extra_pythonpath()[1:] + [env.get("PYTHONPATH", "")]).strip(os.pathsep)
    env.pop("SELF_CASCADE_VRAM_CAP_GIB", None)
    if cap_gib is not None:
        env["SELF_CASCADE_VRAM_CAP_GIB"] = str(cap_gib)
    root = hostenv.comfyui_root()
    log_path = base / f"comfyui-{port}.log"
    log = open(log_path, "w")
    cmd = [sys.executable, str(root / "main.py"), "--listen", "127.0.0.1", "--port", str(port), "--base-directory",
           str(base), "--disable-api-nodes", "--disable-auto-launch", "--front-end-root", str(base / "frontend"),
           *(["--cpu"] if cpu else []), *flags]
    proc = subprocess.Popen(cmd, cwd=str(root), stdout=log, stderr=subprocess.STDOUT, env=env)
    server = hostenv.ServerProcess(proc, port, base, log_path, log)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            call(server, "/system_stats")
            return server
        time.sleep(0.5)
    server.stop()
    why = f"exited with code {proc.returncode}" if proc.returncode is not None else f"gave no answer in {timeout:.0f}s"
    raise RuntimeError(f"ComfyUI {why} during start-up:\n{server.log()[-3000:]}")


def call(server: hostenv.ServerProcess, path: str, post: bool = False) -> dict:
    """GET (or POST, empty body) ``path`` on the server; the JSON answer."""
    req = urllib.request.Request(server.url + path, data=b"{}" if post else None, method="POST" if post else "GET")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def probe(server: hostenv.ServerProcess, reset: bool = False) -> dict:
    """The measurement probe's figures (``vram_probe.stats``), or ``{"error": ...}`` when it does not answer."""
    try:
        return call(server, "/self_cascade_probe/reset" if reset else "/self_cascade_probe/stats", post=reset)
    except (OSError, ValueError) as e:
        return {"error": f"{type(e).__name__}: {e}"}
