"""Step 1 of the benchmark, before anything is tuned: does direct inference fail at 4x / 16x pixels?

Command line of ``benchmark/miniature/direct_failure.py`` (see its docstring and docs/BENCHMARK.md).
"""
import hostenv  # the dev host harness (dev/ is on the host venv's path)

hostenv.start()
from self_cascade.benchmark.miniature.direct_failure import main  # noqa: E402

if __name__ == "__main__":
    main()
