"""Which process this is in a launched run (torchrun, accelerate, deepspeed set RANK and WORLD_SIZE), and a
barrier across them. Plain processes are rank 0 of 1 and never wait."""

from __future__ import annotations

import os
import sys


def rank_and_world() -> tuple[int, int]:
    """(this process's rank, the number of processes)."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return rank_and_world()[0] == 0


def wait_for_everyone() -> None:
    """Barrier across the ranks of a distributed run; nothing in a plain process."""
    if "torch" not in sys.modules:  # nothing can have started a process group; importing torch costs seconds
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def end_process_group() -> None:
    """In a launched run (WORLD_SIZE > 1), destroy the torch.distributed process group once the command is done.
    Left to the interpreter's exit, gloo's threads can be torn down while still running: the rank then aborts
    ("terminate called without an active exception") after its work is written, and the launcher reports a
    failure."""
    if "torch" not in sys.modules or rank_and_world()[1] <= 1:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
