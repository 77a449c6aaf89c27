"""Train the benchmark's base model (seeded, reproducible on the same torch/CPU) on procedural scenes.

Command line of ``benchmark/miniature/train_base.py`` (see its docstring and docs/BENCHMARK.md).
"""
import hostenv  # the dev host harness (dev/ is on the host venv's path)

hostenv.start()
from self_cascade.benchmark.miniature.train_base import main  # noqa: E402

if __name__ == "__main__":
    main()
