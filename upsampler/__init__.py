"""The Self-Cascade method in pure torch (no ComfyUI import): testable and reusable alone.

Tuning-free path: ``pivot`` (pivot upsampling of latents), ``renoise`` (Eq. 6: diffuse the pivot
to step K, the remaining schedule, per-sample noise), ``stages`` (scale decomposition).
Tuned path: ``taps`` (where upsamplers read/write, from the UNet's structure), ``modules``
(time-aware upsamplers, official and light, ``UpsamplerSet``), ``fileformat`` (safetensors),
``checkpoint`` (training checkpoints, atomic writes), ``losscurve`` (loss plot), ``convert``
(official SDXL weights); ``python -m upsampler`` prints parameter counts.
"""
