"""Use the development ComfyUI host from Python: in-process imports, the pack, a live server.

Shared by the tests, the benchmark scripts and ``dev/run``. Run ``python3 dev/host.py setup``
first (``dev/test`` and ``dev/run`` do); this module assumes it runs in the host venv, where
``dev/`` is on the path (the venv's ``self_cascade_dev.pth``, written by ``dev/host.py``), so any
script starts with::

    import hostenv
    hostenv.start()                       # ComfyUI in-process on the CPU, the pack as ``self_cascade``
    from self_cascade.benchmark import model

The path handling itself is the repository's one start-up helper, ``scripts/comfy_startup.py``.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
STUBS = REPO / "dev" / "stubs"
PACK_NAME = "self_cascade"

from host import comfyui_root  # noqa: E402  (dev/ is on the path: this module lives there)


def _load_startup() -> ModuleType:
    """``scripts/comfy_startup.py``, loaded by file location (scripts/ is not on the path here)."""
    if "comfy_startup" in sys.modules:
        return sys.modules["comfy_startup"]
    spec = importlib.util.spec_from_file_location("comfy_startup", REPO / "scripts" / "comfy_startup.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["comfy_startup"] = module
    spec.loader.exec_module(module)
    return module


startup = _load_startup()


@functools.lru_cache(maxsize=1)
def _needs_torchvision_stub() -> bool:
    """Decided once, before the stub itself may be on sys.path."""
    try:
        import torchvision  # noqa: F401
    except Exception:  # missing, or PyPI's wheel that does not import beside the CPU torch
        sys.modules.pop("torchvision", None)
        return True
    return False


def extra_pythonpath() -> list[str]:
    """Paths a ComfyUI process needs on PYTHONPATH here: the ComfyUI root, and the stub if needed."""
    paths = [str(comfyui_root())]
    if _needs_torchvision_stub():
        paths.append(str(STUBS))
    return paths


def prepare_in_process(cpu: bool = True) -> Path:
    """Make ``import comfy...`` work in this process (on the CPU unless ``cpu=False``: then ComfyUI picks
    the device, e.g. CUDA). Call before anything imports ``comfy.model_management``. Returns the ComfyUI root."""
    paths = extra_pythonpath()
    return startup.prepare_comfyui(Path(paths[0]), cpu=cpu, extra_paths=tuple(paths[1:]))


def load_pack(name: str = PACK_NAME) -> ModuleType:
    """Import this repository as the package ``name`` (as ComfyUI does with a custom node folder)."""
    return startup.load_pack(name)


def start(cpu: bool = True) -> ModuleType:
    """ComfyUI in-process (on the CPU unless ``cpu=False``) and the pack as ``self_cascade``: the first call of
    every dev script."""
    prepare_in_process(cpu)
    return load_pack()


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerProcess:
    """A ComfyUI server started by :func:`start_server`; stop it with :meth:`stop`."""

    proc: subprocess.Popen
    port: int
    base_dir: Path
    log_path: Path
    _log: object = field(repr=False, default=None)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        if self._log:
            self._log.close()


def pack_import_failures(log: str, pack_dir_name: str = PACK_NAME) -> list[str]:
    """Lines of a ComfyUI log that report a failed import of the pack (ComfyUI only logs these)."""
    marker = f"custom_nodes/{pack_dir_name}"
    return [line for line in log.splitlines()
            if marker in line.replace("\\", "/") and ("IMPORT FAILED" in line or "Cannot import" in line)]


def start_server(base_dir: Path, port: int | None = None, with_pack: bool = True,
                 timeout: float = 120.0, extra_args: list[str] | None = None) -> ServerProcess:
    """Start a real ComfyUI server on loopback with this repo installed in its custom_nodes.

    ``base_dir`` gets custom_nodes/, models/, input/, output/, temp/ and user/. Waits until
    ``/system_stats`` answers; raises RuntimeError with the log tail if it does not.
    """
    base_dir = Path(base_dir)
    custom = base_dir / "custom_nodes"
    custom.mkdir(parents=True, exist_ok=True)
    link = custom / PACK_NAME
    if with_pack and not link.exists():
        link.symlink_to(REPO, target_is_directory=True)
    if not with_pack and link.is_symlink():
        link.unlink()
    port = port or free_port()
    root = comfyui_root()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(extra_pythonpath()[1:] + [env.get("PYTHONPATH", "")]).strip(os.pathsep)
    env.setdefault("OMP_NUM_THREADS", "2")
    log_path = base_dir / f"comfyui-{port}.log"
    log = open(log_path, "w")
    cmd = [sys.executable, str(root / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--base-directory", str(base_dir), "--disable-api-nodes", "--disable-auto-launch",
           *(extra_args or [])]
    proc = subprocess.Popen(cmd, cwd=str(root), stdout=log, stderr=subprocess.STDOUT, env=env)
    server = ServerProcess(proc, port, base_dir, log_path, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            server.stop()
            raise RuntimeError(f"ComfyUI exited with code {proc.returncode} during start-up:\n{server.log()[-4000:]}")
        try:
            with urllib.request.urlopen(server.url + "/system_stats", timeout=2) as r:
                if r.status == 200:
                    return server
        except OSError:
            time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"ComfyUI did not answer on port {port} within {timeout:.0f}s:\n{server.log()[-4000:]}")
