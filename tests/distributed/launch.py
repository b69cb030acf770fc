"""Launching `python -m align` for the distributed tests: one process, or ranks under torchrun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

RUN_TIMEOUT = 300  # seconds; a run takes 10-25 s


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def align_cli(args, nproc: int = 1, timeout: int = RUN_TIMEOUT, launcher: str = "torchrun",
              accelerate_config=None, env_extra: dict | None = None,
              module: str = "align", check: bool = True) -> subprocess.CompletedProcess:
    """`python -m align ARGS`, under `torchrun --standalone` (a free port) when nproc > 1, or under
    `accelerate launch --config_file ACCELERATE_CONFIG` / the `deepspeed` launcher. One thread per rank: two ranks on
    two cores; on timeout the whole process group (launcher and ranks) is killed. `module` replaces `align` (a
    wrapper that patches something first, then runs align's main); `check=False` returns a failed run too."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    env.update(env_extra or {})
    if launcher == "accelerate":
        command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config),
                   "--num_processes", str(nproc), "--main_process_port", str(free_port()), "-m", module]
    elif launcher == "deepspeed":  # appends --local_rank=N to the arguments; align drops it
        command = [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", str(nproc), "--master_port",
                   str(free_port()), "--module", module]
    else:
        command = [sys.executable]
        if nproc > 1:
            command += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
        command += ["-m", module]
    proc = subprocess.Popen([*command, *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"align {' '.join(map(str, args))} ran over {timeout} s\n{out[-2000:]}\n{err[-6000:]}")
    command = " ".join(map(str, args))
    assert proc.returncode == 0 or not check, f"align {command} exited {proc.returncode}\n{out[-2000:]}\n{err[-6000:]}"
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
