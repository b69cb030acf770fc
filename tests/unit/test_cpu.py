"""align.cpu: the quickstart's threads are the cores other processes leave free, at least one."""

from __future__ import annotations

import psutil
import pytest

from align.cpu import free_cores, thread_count


@pytest.mark.parametrize("usage, free", [([3.0, 5.0], 2), ([97.0, 4.0], 1), ([99.0, 98.0], 1),
                                         ([10.0, 80.0, 60.0, 0.0], 2)])
def test_free_cores_count_the_cores_below_half_use(usage, free, monkeypatch):
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval, percpu: usage)
    assert free_cores() == free


def test_a_requested_count_wins(monkeypatch):
    monkeypatch.setattr(psutil, "cpu_percent", lambda interval, percpu: [99.0, 99.0])
    assert thread_count(3) == 3
    assert thread_count(0) == 1
