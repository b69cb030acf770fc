"""`python -m rss_probe ALIGN-ARGS`: align's CLI recording this rank's resident memory (RSS) for the memory
planner's test: once after the libraries are imported (the baseline), and after every training step, where the
model states (weights, gradients, optimizer states) and the step's gathered layers are all resident. Writes
{"baseline": bytes, "steps": [bytes, ...]} to $RSS_OUT/rank<RANK>.json when the run ends."""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path


def resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _install(out: Path) -> None:
    import deepspeed  # noqa: F401  (imported before the baseline: libraries are not the run's memory)
    import transformers
    import trl  # noqa: F401

    import align.train.dpo.run  # noqa: F401
    import align.train.sft.run  # noqa: F401

    record = {"baseline": resident_bytes(), "steps": []}
    step = transformers.Trainer.training_step

    def measured_step(self, *args, **kwargs):
        loss = step(self, *args, **kwargs)
        record["steps"].append(resident_bytes())
        return loss

    transformers.Trainer.training_step = measured_step

    def write() -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(record))

    atexit.register(write)


if __name__ == "__main__":
    _install(Path(os.environ["RSS_OUT"]))
    from align.cli.main import main

    main(sys.argv[1:])
