"""The Self-Cascade method in pure torch (no ComfyUI import): testable and reusable alone.

Modules: ``pivot`` (pivot upsampling of latents), ``stages`` (scale decomposition).
Later modules add the renoise maths, the time-aware feature upsamplers, their file format
and training.
"""
