"""The paper's tables in miniature: one run, every method, same seeds, same sampler and step setting.

Command line of ``benchmark/miniature/evaluate.py`` (see its docstring and docs/BENCHMARK.md).
"""
import hostenv  # the dev host harness (dev/ is on the host venv's path)

hostenv.start()
from self_cascade.benchmark.miniature.evaluate import main  # noqa: E402

if __name__ == "__main__":
    main()
