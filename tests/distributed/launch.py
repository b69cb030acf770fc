"""Launching `python -m align` for the distributed tests: one process, or ranks under torchrun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

RUN_TIMEOUT = 300  # seconds; a run takes 10-25 s


def align_cli(args, nproc: int = 1, timeout: int = RUN_TIMEOUT) -> subprocess.CompletedProcess:
    """`python -m align ARGS`, under `torchrun --standalone` (a free port) when nproc > 1. One thread per rank: two
    ranks on two cores; on timeout the whole process group (launcher and ranks) is killed."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    proc = subprocess.Popen([*launcher, "-m", "align", *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"align {' '.join(map(str, args))} ran over {timeout} s\n{out[-2000:]}\n{err[-6000:]}")
    command = " ".join(map(str, args))
    assert proc.returncode == 0, f"align {command} exited {proc.returncode}\n{out[-2000:]}\n{err[-6000:]}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
