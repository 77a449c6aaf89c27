"""Experimental, opt-in: replay the UNet forward of the cascade's small stages from CUDA graphs.

The small stages are launch-bound on a fast GPU (the 2026-12-04 H200 profile: 53 ms per sampler step at
a 64x64 SD1.5 latent against 23 ms of bare UNet forward). :func:`graphed` returns a clone of the model
whose DIFFUSION_MODEL wrapper captures one CUDA graph per input signature (shapes, dtypes) of latents of at
most ``max_side`` per side, and replays it with the inputs copied into the graph's static buffers. It falls
back to the eager forward (the executor ComfyUI passes) on the CPU, for larger latents, with a ControlNet or
extra inputs, with any transformer patch (the pack's tuned stage, core patches) and when a capture fails.
Graphs share one memory pool; each holds its stage's activations while the model lives.

Never on by default, and never in the pack: a benchmark row (``tf_cudagraph``) to measure what replay would
buy against ComfyUI's own ``TorchCompileModel`` (rows ``tf_compile``, ``tf_compile_cudagraphs``).
"""
from __future__ import annotations

import logging

logger = logging.getLogger(__name__)
KEY = "self_cascade_bench_cudagraph"


class GraphedForward:
    """The DIFFUSION_MODEL wrapper: ``(executor, x, timesteps, context, y, control, transformer_options, **kw)``."""

    def __init__(self, max_side: int):
        self.max_side, self.graphs, self.pool, self.failed = max_side, {}, None, set()
        self.replays = self.eager = 0

    def _eligible(self, x, y, control, options: dict, kwargs: dict) -> bool:
        patched = any(options.get(k) for k in ("patches", "patches_replace"))
        return (x.is_cuda and max(x.shape[-2:]) <= self.max_side and control is None and not kwargs
                and not patched)

    def __call__(self, executor, x, timesteps, context, y, control, transformer_options, **kwargs):
        if not self._eligible(x, y, control, transformer_options, kwargs):
            self.eager += 1
            return executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        inputs = (x, timesteps, context, y)
        key = tuple(None if t is None else (tuple(t.shape), t.dtype) for t in inputs)
        if key in self.failed:
            self.eager += 1
            return executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        if key not in self.graphs:
            try:
                self.graphs[key] = self._capture(executor, inputs, transformer_options)
            except Exception as e:  # eager from now on for this signature
                logger.warning("CUDA graph capture failed for %s (%s); eager", key, e)
                self.failed.add(key)
                self.eager += 1
                return executor(x, timesteps, context, y, control, transformer_options, **kwargs)
        graph, static_in, static_out = self.graphs[key]
        for dst, src in zip(static_in, inputs, strict=True):
            if dst is not None:
                dst.copy_(src)
        graph.replay()
        self.replays += 1
        return static_out.clone()

    def _capture(self, executor, inputs, options):
        import torch

        static_in = tuple(None if t is None else t.clone() for t in inputs)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up off the capture (allocator, lazy kernels)
            for _ in range(2):
                executor(*static_in, None, options)
        torch.cuda.current_stream().wait_stream(stream)
        self.pool = self.pool or torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            static_out = executor(*static_in, None, options)
        return graph, static_in, static_out


def graphed(model, max_side: int = 128):
    """A clone of ``model`` (a ModelPatcher) with :class:`GraphedForward` as a DIFFUSION_MODEL wrapper."""
    import comfy.patcher_extension

    out = model.clone()
    fwd = GraphedForward(max_side)
    out.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY, fwd)
    return out, fwd
