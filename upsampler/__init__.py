"""The Self-Cascade method in pure torch (no ComfyUI import): testable and reusable alone.

Modules: ``pivot`` (pivot upsampling of latents), ``stages`` (scale decomposition).
Tuned path: ``taps`` (where upsamplers read/write, from the UNet's structure), ``modules``
(time-aware upsamplers, official and light, ``UpsamplerSet``), ``fileformat`` (safetensors),
``convert`` (official SDXL weights); ``python -m upsampler`` prints parameter counts.
Others add the renoise maths and training.
"""
