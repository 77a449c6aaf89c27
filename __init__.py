"""Self-Cascade for ComfyUI: cheap higher-resolution adaptation of a frozen diffusion model.

Guo, He et al., "Make a Cheap Scaling: A Self-Cascade Diffusion Model for Higher-Resolution
Adaptation", ECCV 2024. ComfyUI loads this package and calls :func:`comfy_entrypoint`.

Layout: ``upsampler/`` is the method in pure torch (no ComfyUI import); ``nodes/`` is the thin
ComfyUI layer over it. Importing this package outside ComfyUI succeeds and simply exports no
entry point, so tools and tests can import the pure-torch core.
"""
from __future__ import annotations

try:  # only inside a ComfyUI process
    from comfy_api.latest import ComfyExtension as _ComfyExtension  # noqa: F401
except ImportError:  # pragma: no cover - outside ComfyUI
    _ComfyExtension = None

WEB_DIRECTORY = "./web"

if _ComfyExtension is not None:

    async def comfy_entrypoint():
        """The pack's single V3 entry point (no NODE_CLASS_MAPPINGS on purpose)."""
        from .nodes import SelfCascadeExtension

        return SelfCascadeExtension()

    # Register models/self_cascade/ at import time so the folder exists for loaders.
    from .nodes.common import register_model_folder as _register

    _register()
