"""The one start-up path for every script of this repository: ComfyUI as a library, this repo as ``self_cascade``.

A script in ``scripts/`` imports it directly (its folder is ``sys.path[0]``); the development harness
(``dev/hostenv.py``) loads it by file location. It is the only module that edits ``sys.path``
(besides the test conftest), and it does so in one way: ComfyUI's root goes **first**, so that
``import nodes`` always means ComfyUI's ``nodes.py``; this repository is never put on ``sys.path``
but imported as the package ``self_cascade`` (as ComfyUI imports a custom node folder), so the
pack's own modules are always ``self_cascade.nodes``, ``self_cascade.upsampler``,
``self_cascade.benchmark`` ... with no name clash.

    from comfy_startup import start
    pack = start()                 # ComfyUI found from $COMFYUI_PATH or the custom_nodes folder we sit in
    from self_cascade.nodes.cascade import cascade_stage

Pure-torch tools (no ComfyUI) call ``start(comfyui=False)``: only ``self_cascade.upsampler`` is usable then.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
PACK_NAME = "self_cascade"


class StartupError(RuntimeError):
    """ComfyUI could not be found or prepared; the message says what to set."""


def is_comfyui_root(path: Path) -> bool:
    return (path / "main.py").is_file() and (path / "comfy").is_dir()


def find_comfyui_root(explicit: str | os.PathLike | None = None) -> Path:
    """ComfyUI's root: ``explicit``, else ``$COMFYUI_PATH``, else the ComfyUI whose ``custom_nodes`` holds this repo."""
    for source, value in (("--comfyui", explicit), ("COMFYUI_PATH", os.environ.get("COMFYUI_PATH"))):
        if value:
            root = Path(value).expanduser().resolve()
            if not is_comfyui_root(root):
                raise StartupError(f"{source}={value} is not a ComfyUI folder (no main.py and comfy/ in it).")
            return root
    if REPO.parent.name == "custom_nodes" and is_comfyui_root(REPO.parent.parent):
        return REPO.parent.parent
    raise StartupError("cannot find ComfyUI: pass --comfyui /path/to/ComfyUI or set COMFYUI_PATH "
                       "(or install this pack under ComfyUI/custom_nodes/).")


def put_first_on_path(*paths: str | os.PathLike) -> None:
    """Put ``paths`` at the front of ``sys.path`` in the given order (moved there if already present)."""
    for p in reversed([str(p) for p in paths]):
        while p in sys.path:
            sys.path.remove(p)
        sys.path.insert(0, p)


def load_pack(name: str = PACK_NAME, *, run_init: bool = True) -> ModuleType:
    """Import this repository as the package ``name``.

    ``run_init=False`` makes a bare package (its ``__init__`` not run, so nothing imports ComfyUI):
    enough for the pure-torch core ``self_cascade.upsampler``.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "__init__.py", submodule_search_locations=[str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    if run_init:
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(name, None)
            raise
    return module


def prepare_comfyui(root: Path, *, cpu: bool = False, extra_paths: tuple[str, ...] = ()) -> Path:
    """Make ``import comfy...`` work in this process without ComfyUI's command-line parsing."""
    put_first_on_path(root, *extra_paths)
    import comfy.options

    comfy.options.args_parsing = False
    if cpu:
        import comfy.cli_args

        comfy.cli_args.args.cpu = True
    return root


def start(comfyui_root: str | os.PathLike | None = None, *, cpu: bool = False, comfyui: bool = True,
          extra_paths: tuple[str, ...] = ()) -> ModuleType:
    """Prepare ComfyUI (unless ``comfyui=False``) and return this repository imported as ``self_cascade``."""
    if not comfyui:
        return load_pack(run_init=False)
    prepare_comfyui(find_comfyui_root(comfyui_root), cpu=cpu, extra_paths=extra_paths)
    return load_pack()
