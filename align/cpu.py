"""How many CPU threads a tiny model should use right now.

torch's intra-op threads wait for each other at every operator; when another process holds one of the cores, a
thread that lost its core stalls all the others. Measured on 2 cores (benchmarks/bench_threads.py), an SFT step of
the quickstart's model took 0.46 s with 2 threads and 0.66 s with 1 alone, but 1.30 s with 2 threads beside one
busy process against 0.62 s with 1. So the quickstart takes, at the start of each step, the cores nobody else is
using (`free_cores`), and never more than that.
"""

from __future__ import annotations

import os

BUSY = 50.0  # a core above this many percent of use, measured over the sample, is someone else's


def free_cores(sample_seconds: float = 0.3) -> int:
    """Cores not busy with other work over a short sample (this process is idle while it measures); at least 1."""
    import psutil

    usage = psutil.cpu_percent(interval=sample_seconds, percpu=True)
    cores = len(usage) or (os.cpu_count() or 1)
    busy = sum(1 for percent in usage if percent > BUSY)
    return max(1, cores - busy)


def thread_count(requested: int) -> int:
    """`requested` threads when given (> 0); else (0) the free cores now."""
    return requested if requested > 0 else free_cores()
