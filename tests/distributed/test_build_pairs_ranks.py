"""A model-based builder under `torchrun --nproc_per_node 2` (gloo on a CPU) writes the same rows as one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from align.data.io import read_records

pytestmark = [pytest.mark.distributed, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               HF_HUB_DISABLE_PROGRESS_BARS="1", TRANSFORMERS_VERBOSITY="error")
    env.pop("RANK", None)
    env.pop("WORLD_SIZE", None)
    return env


def test_two_ranks_write_the_rows_one_process_writes(tiny_checkpoint, shapes_world, tmp_path):
    args = ["build-pairs", "stic", "--input", str(shapes_world / "sources.jsonl"), "--model",
            str(tiny_checkpoint("llava")), "--limit", "8", "chunk_size=2", "batch_size=2", "max_new_tokens=4"]
    single = subprocess.run([sys.executable, "-m", "align", *args, "--out", str(tmp_path / "one")], env=_env(),
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert single.returncode == 0, single.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--master_port", "29531", "-m", "align", *args, "--out", str(tmp_path / "two")],
                         env=_env(), capture_output=True, text=True, timeout=300, cwd=REPO)
    assert two.returncode == 0, two.stderr[-3000:]
    one_rows, two_rows = read_records(tmp_path / "one"), read_records(tmp_path / "two")
    assert len(one_rows) >= 4
    assert list(one_rows) == list(two_rows)
    assert not (tmp_path / ".two.work").exists()
