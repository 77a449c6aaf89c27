"""The performance suite's parts (run by benchmark/gpu_suite.py; cost.py, cost_upsamplers.py and train_cost.py
are thin command lines over them): seeded real-size models from ComfyUI's own configs, the inference rows,
the upsampler overhead per step, the training step rows, the time budget, and the report.

Every module imports ComfyUI lazily (inside functions): the caller sets the host up first.
"""
