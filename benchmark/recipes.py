"""Does training the upsamplers earn its place? The four training recipes and per-stage K, on the captioned model.

Command line of ``benchmark/miniature/recipes.py`` (see its docstring and docs/BENCHMARK.md).
"""
import hostenv  # the dev host harness (dev/ is on the host venv's path)

hostenv.start()
from self_cascade.benchmark.miniature.recipes import main  # noqa: E402

if __name__ == "__main__":
    main()
