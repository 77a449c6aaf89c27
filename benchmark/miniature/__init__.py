"""The quality miniature: a ~1 M-parameter pixel-space diffusion model trained here on procedural
scenes, the paper's tables in miniature on a CPU (docs/BENCHMARK.md). Library modules; the command
lines are the thin scripts in benchmark/ (evaluate.py, recipes.py, recipe_sweep.py, train_base.py,
direct_failure.py). Not Stable Diffusion: the numbers test the mechanism, not SD image quality."""
