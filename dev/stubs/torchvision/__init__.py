"""Import-only stand-in for torchvision, used ONLY by the development/test host.

PyPI's torchvision wheels do not import beside the CPU torch build used here, and ComfyUI
0.3.75 imports torchvision at module level in a few model files (Stable Cascade, Cosmos) that
SD-family sampling never calls. This stub lets those imports succeed; any real use raises.
It is put on the path only when no real torchvision can be imported (see dev/hostenv.py).
"""
from . import transforms  # noqa: F401

__version__ = "0.0.0+selfcascade-stub"


def __getattr__(name: str):
    raise ImportError(f"torchvision.{name} is not available: this is the Self-Cascade test stub")
