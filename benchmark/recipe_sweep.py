"""Learning-rate sweep for the benchmark's trained rows, on seed sets disjoint from the reported ones.

Command line of ``benchmark/miniature/recipe_sweep.py`` (see its docstring and docs/BENCHMARK.md).
"""
import hostenv  # the dev host harness (dev/ is on the host venv's path)

hostenv.start()
from self_cascade.benchmark.miniature.recipe_sweep import main  # noqa: E402

if __name__ == "__main__":
    main()
