"""scripts/train_upsamplers.py with one rank killed (SIGKILL) after a given step: a crash after a checkpoint.

Run by torchrun in place of the script (tests/test_train_cli.py):
    train_cli_killed.py RANK:STEP <the script's arguments>
Rank RANK kills itself when the training core next checks for a stop after STEP steps are done, the moment
a crash would lose the least and still leave the run to be resumed. The script itself carries no test hook.
"""
from __future__ import annotations

import importlib.util
import os
import signal
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "train_upsamplers.py"


def _load_cli():
    spec = importlib.util.spec_from_file_location("train_upsamplers_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> int:
    kill_rank, kill_step = (int(v) for v in sys.argv[1].split(":"))
    cli = _load_cli()
    run = cli.run

    def run_with_kill(args, parallel):
        import self_cascade.nodes.training as training

        train_on_pairs = training.train_on_pairs

        def killed(*a, interrupt_check, progress, **k):
            done = {"step": 0}

            def on_progress(step, total, loss):
                done["step"] = step
                progress(step, total, loss)

            def on_check():
                if parallel.rank == kill_rank and done["step"] >= kill_step:
                    os.kill(os.getpid(), signal.SIGKILL)
                interrupt_check()

            return train_on_pairs(*a, interrupt_check=on_check, progress=on_progress, **k)

        training.train_on_pairs = killed
        return run(args, parallel)

    cli.run = run_with_kill
    return cli.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
