"""`python -m stop_after ALIGN-ARGS`: align's CLI in a process that kills itself (SIGKILL: no cleanup, no final save)
right after the Trainer wrote the checkpoint of step $STOP_AFTER_STEP, as a crash or a preempted job would. Used by
the resume tests: the run is then continued with `--resume`."""

from __future__ import annotations

import os
import signal
import sys


def _install(step: int) -> None:
    from transformers import Trainer

    save = Trainer._save_checkpoint

    def save_then_die(self, *args, **kwargs):
        out = save(self, *args, **kwargs)
        if self.state.global_step == step:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    Trainer._save_checkpoint = save_then_die


if __name__ == "__main__":
    _install(int(os.environ["STOP_AFTER_STEP"]))
    from align.cli.main import main

    main(sys.argv[1:])
