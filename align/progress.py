"""Progress of long work: one rich display on a terminal, plain periodic lines everywhere else.

    with progress_task("sft", total=700, unit="steps") as task:
        for ...:
            task.advance()

On a terminal a task is a rich bar with done/total, elapsed time and time remaining. When the output is not a
terminal (a log file, CI), rich would draw nothing until the end, so a task prints one plain line every
`line_seconds` and one when it ends: `sft: 140/700 steps (20%), 1:12 elapsed, about 4:48 left`.

Tasks nest under a `ProgressBoard`: while a board is active (`with ProgressBoard(console) as board:`), every task
anywhere below (a trainer's steps, an evaluation's answers) is drawn on it, beside the board's own overall task,
so one display shows both the whole job and its current step. Without an active board a task makes its own.
A task created with `weight` also advances the board's overall task by `weight` x its own fraction done: with
weights in estimated seconds, the overall bar's time remaining is a calibrated estimate for the whole job.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

_active: list[ProgressBoard] = []


def _clock(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class ProgressTask:
    """One piece of work with a known size. `advance(n)` or `update(completed)`; `fields` show beside the bar."""

    def __init__(self, board: ProgressBoard, label: str, total: float, unit: str, completed: float, weight: float,
                 transient: bool, percent: bool = False):
        self.percent = percent  # drawn as a percentage (work counted in estimated units), not done/total
        self.board, self.label, self.total, self.unit = board, label, max(float(total), 0.0), unit
        if not weight and not transient and board._pending:  # the first task of a stage carries its weight
            weight, board._pending = board._pending, 0.0
        self.completed, self.weight, self.transient = float(completed), weight, transient
        self.started = time.perf_counter()
        self._start_completed = self.completed
        self._last_line = self.started
        self._printed_at: float | None = None
        self._reported_overall = 0.0
        self._id = board._add(self)
        self._report_overall()

    @property
    def fraction(self) -> float:
        return min(1.0, self.completed / self.total) if self.total else 1.0

    def advance(self, n: float = 1) -> None:
        self.update(self.completed + n)

    def update(self, completed: float, **fields: Any) -> None:
        self.completed = float(completed)
        self.board._update(self, fields)
        self._report_overall()

    def rate(self) -> float:
        """Units done per second since the task started (0 before any progress)."""
        elapsed = time.perf_counter() - self.started
        return (self.completed - self._start_completed) / elapsed if elapsed > 0 else 0.0

    def remaining_seconds(self) -> float | None:
        """From this task's own pace since it started (None before any progress)."""
        rate = self.rate()
        return max(0.0, self.total - self.completed) / rate if rate > 0 else None

    def line(self) -> str:
        elapsed = time.perf_counter() - self.started
        text = f"{self.label}: {self.completed:,.0f}/{self.total:,.0f} {self.unit} ({100 * self.fraction:.0f}%), " \
               f"{_clock(elapsed)} elapsed"
        left = self.remaining_seconds()
        if left is not None and self.completed < self.total:
            text += f", about {_clock(left)} left"
        return text

    def close(self) -> None:
        self.board._finish(self)
        self._report_overall(final=True)

    def _report_overall(self, final: bool = False) -> None:
        if self.weight and self.board.overall is not None and self.board.overall is not self:
            target = self.weight * (1.0 if final else self.fraction)
            self.board.overall.advance(target - self._reported_overall)
            self._reported_overall = target


class ProgressBoard:
    """Where tasks are drawn: a rich Progress on a terminal console, plain lines otherwise.

    `overall`: an optional task for the whole job (`board.start_overall(label, total)`), advanced by the weighted
    tasks below it. `line_seconds`: how often a task prints its plain line when not on a terminal."""

    def __init__(self, console=None, line_seconds: float = 30.0):
        self.console = console or Console(stderr=True)
        self.line_seconds = line_seconds
        self.live = self.console.is_terminal
        self.overall: ProgressTask | None = None
        self._rich = None
        self._pending = 0.0

    def __enter__(self) -> ProgressBoard:
        if self.live:
            # Library output that the caller redirects (to a log file) must not be captured by the display.
            self._rich = Progress(TextColumn("{task.description}"), BarColumn(), _Count(),
                                  TextColumn("{task.fields[unit]}"), TimeElapsedColumn(), TextColumn("<"),
                                  _Remaining(), TextColumn("{task.fields[info]}"), console=self.console,
                                  redirect_stdout=False, redirect_stderr=False)
            self._rich.start()
        _active.append(self)
        return self

    def __exit__(self, *exc) -> bool:
        _active.remove(self)
        if self._rich is not None:
            self._rich.stop()
        return False

    def start_overall(self, label: str, total: float) -> ProgressTask:
        """The whole job's task, counted in estimated work (any unit, e.g. seconds on a reference machine)."""
        self.overall = ProgressTask(self, label, total, "", 0.0, 0.0, transient=False, percent=True)
        return self.overall

    @contextlib.contextmanager
    def stage(self, weight: float) -> Iterator[None]:
        """A step of the whole job worth `weight` of the overall task. The first task that starts inside carries
        the weight (the overall bar moves with it); what it did not report is added when the stage ends, so
        the overall task always advances by exactly `weight`. Stages nest: an inner stage's weight is its own."""
        if self.overall is None:
            yield
            return
        saved, self._pending = self._pending, weight
        start = self.overall.completed
        try:
            yield
        finally:
            self._pending = saved
            self.overall.update(max(self.overall.completed, start + weight))

    def overall_line(self) -> str:
        """`label: 45% of the estimated work, 4:12 elapsed, about 5:10 left` (the pace so far, extrapolated)."""
        task = self.overall
        if task is None:
            return ""
        elapsed = time.perf_counter() - task.started
        text = f"{task.label}: {100 * task.fraction:.0f}% of the estimated work, {_clock(elapsed)} elapsed"
        left = task.remaining_seconds()
        if left is not None and task.completed < task.total:
            text += f", about {_clock(left)} left"
        return text

    def print(self, *args: Any) -> None:
        self.console.print(*args)

    def _add(self, task: ProgressTask) -> Any:
        if self._rich is not None:
            return self._rich.add_task(task.label, total=task.total or None, completed=task.completed,
                                       unit=task.unit, info="", start_completed=task.completed,
                                       percent=task.percent)
        return None

    def _update(self, task: ProgressTask, fields: dict[str, Any]) -> None:
        if self._rich is not None:
            info = "  ".join(f"{k} {v}" for k, v in fields.items())
            self._rich.update(task._id, completed=task.completed, **({"info": info} if fields else {}))
            return
        now = time.perf_counter()
        if task is not self.overall and now - task._last_line >= self.line_seconds:
            task._last_line = now
            self._print_line(task)

    def _finish(self, task: ProgressTask) -> None:
        if self._rich is not None:
            if task.transient:
                self._rich.remove_task(task._id)
            else:
                self._rich.update(task._id, completed=task.total)
                if task is not self.overall:
                    self._rich.remove_task(task._id)
            return
        if not task.transient and task is not self.overall:
            self._print_line(task)

    def _print_line(self, task: ProgressTask) -> None:
        if task._printed_at != task.completed:  # a task that ends right after a periodic line says it once
            task._printed_at = task.completed
            self.console.print(task.line(), highlight=False)


class _Count(ProgressColumn):
    """done/total, or a percentage for a task counted in estimated work (the overall task)."""

    def render(self, task) -> Text:
        if task.fields.get("percent"):
            return Text(f"{task.percentage:>3.0f}%", style="progress.percentage")
        total = "?" if task.total is None else f"{task.total:,.0f}"
        return Text(f"{task.completed:,.0f}/{total}", style="progress.download")


class _Remaining(ProgressColumn):
    """Time remaining from the task's average pace since it started (rich's own column uses the last 30 s only,
    which jumps around on steps of uneven cost); '-:--' before the first update."""

    def render(self, task) -> Text:
        if task.finished:
            return Text("0:00")
        done = task.completed - task.fields.get("start_completed", 0.0)
        elapsed = task.elapsed or 0.0
        if done <= 0 or task.total is None or elapsed <= 0:
            return Text("-:--")
        return Text(_clock(elapsed / done * (task.total - task.completed)))


def active_board() -> ProgressBoard | None:
    return _active[-1] if _active else None


@contextlib.contextmanager
def progress_task(label: str, total: float, unit: str = "", completed: float = 0, enabled: bool = True,
                  weight: float = 0.0, transient: bool = False, console=None) -> Iterator[ProgressTask | None]:
    """A task on the active board, or on a board of its own; yields None when disabled."""
    if not enabled:
        yield None
        return
    with contextlib.ExitStack() as stack:
        board = active_board() or stack.enter_context(ProgressBoard(console))
        task = ProgressTask(board, label, total, unit, completed, weight, transient)
        try:
            yield task
        except BaseException:
            task.transient = True  # a failed task's last line would only stand between the user and the error
            task.close()
            raise
        task.close()
