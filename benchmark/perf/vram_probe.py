"""A measurement-only custom node file for the user-path benchmark (benchmark/user_path.py copies it into the
benchmark server's own ``custom_nodes/``; it is never part of the pack and adds no node).

In the server process it:

- caps the CUDA caching allocator at ``SELF_CASCADE_VRAM_CAP_GIB`` (``torch.cuda.set_per_process_memory_fraction``)
  when that is set, so an emulated smaller card really fails where it would run out (together with ComfyUI's
  ``--reserve-vram``, which makes ComfyUI plan for that card: offload, partial loads);
- marks the VAE decode (``comfy.sd.VAE.decode`` / ``decode_tiled``): the peak of allocated CUDA memory up to
  the first decode is the sampling peak (model loads, text encoders, the cascade's stages), the peak from
  there on the decode's;
- answers ``GET /self_cascade_probe/stats`` (JSON: the peaks in MiB, the cap, the device) and
  ``POST /self_cascade_probe/reset`` (resets the peak statistics before a prompt).

On a machine without CUDA every figure is ``null``.
"""
from __future__ import annotations

import functools
import os
import time

import torch

NODE_CLASS_MAPPINGS: dict = {}  # measurement only: no node
_STATE = {"decode_peak_mib": None, "sampling_peak_mib": None, "decode_s": 0.0, "decodes": 0}
CUDA = torch.cuda.is_available()


def _mib(x: int) -> float:
    return round(x / 2 ** 20, 1)


def _cap() -> tuple[float | None, str | None]:
    """(the cap in GiB, or None; why it could not be set, or None)."""
    cap = os.environ.get("SELF_CASCADE_VRAM_CAP_GIB")
    if not (cap and CUDA):
        return None, None
    try:
        total = torch.cuda.get_device_properties(0).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, float(cap) * 2 ** 30 / total), 0)
    except Exception as e:  # reported in the stats: the emulation then rests on --reserve-vram alone
        return None, f"{type(e).__name__}: {e}"
    return float(cap), None


CAP_GIB, CAP_ERROR = _cap()


def _reset() -> None:
    _STATE.update(decode_peak_mib=None, sampling_peak_mib=None, decode_s=0.0, decodes=0)
    if CUDA:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def _marked(fn):
    @functools.wraps(fn)
    def decode(*args, **kwargs):
        if CUDA and _STATE["sampling_peak_mib"] is None:  # first decode of the prompt: sampling is over
            torch.cuda.synchronize()
            _STATE["sampling_peak_mib"] = _mib(torch.cuda.max_memory_allocated())
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        if CUDA:
            torch.cuda.synchronize()
            _STATE["decode_peak_mib"] = max(_STATE["decode_peak_mib"] or 0.0, _mib(torch.cuda.max_memory_allocated()))
        _STATE["decode_s"] += time.perf_counter() - t0
        _STATE["decodes"] += 1
        return out
    return decode


def stats() -> dict:
    out = dict(_STATE, cap_gib=CAP_GIB, cap_error=CAP_ERROR, cuda=CUDA, peak_allocated_mib=None,
               peak_reserved_mib=None, device=torch.cuda.get_device_name() if CUDA else "cpu",
               allocator=torch.cuda.get_allocator_backend() if CUDA else None)
    if CUDA:
        out.update(peak_allocated_mib=_mib(torch.cuda.max_memory_allocated()),
                   peak_reserved_mib=_mib(torch.cuda.max_memory_reserved()))
    return out


def _install() -> None:
    import comfy.sd
    from aiohttp import web
    from server import PromptServer

    for name in ("decode", "decode_tiled"):
        fn = getattr(comfy.sd.VAE, name)
        if not getattr(fn, "_self_cascade_probe", False):
            wrapped = _marked(fn)
            wrapped._self_cascade_probe = True
            setattr(comfy.sd.VAE, name, wrapped)
    routes = PromptServer.instance.routes

    @routes.get("/self_cascade_probe/stats")
    async def get_stats(request):
        return web.json_response(stats())

    @routes.post("/self_cascade_probe/reset")
    async def post_reset(request):
        _reset()
        return web.json_response(stats())


_install()
