"""align.progress: plain lines off a terminal, an overall task advanced by weighted stages, and no behaviour
switched by environment variables."""

from __future__ import annotations

import io
import re
from pathlib import Path

from rich.console import Console

from align.progress import ProgressBoard, active_board, progress_task


def plain_console() -> tuple[Console, io.StringIO]:
    sink = io.StringIO()
    return Console(file=sink, width=200), sink


def test_off_a_terminal_a_task_prints_plain_lines_and_a_final_one():
    console, sink = plain_console()
    with ProgressBoard(console, line_seconds=0.0) as board:
        assert not board.live and active_board() is board
        with progress_task("sft", 4, "steps") as task:
            for _ in range(4):
                task.advance()
    lines = sink.getvalue().splitlines()
    assert lines[0].startswith("sft: 1/4 steps (25%), 0:00 elapsed, about ")
    assert lines[-1].startswith("sft: 4/4 steps (100%), 0:00 elapsed")
    assert len(lines) == 4  # the last periodic line is not repeated when the task ends
    assert all("\x1b" not in line for line in lines)  # no terminal control codes in a log
    assert active_board() is None


def test_lines_are_rate_limited():
    console, sink = plain_console()
    with ProgressBoard(console, line_seconds=3600.0), progress_task("eval", 100, "questions") as task:
        for _ in range(100):
            task.advance()
    assert sink.getvalue().splitlines() == ["eval: 100/100 questions (100%), 0:00 elapsed"]


def test_transient_tasks_and_disabled_tasks_print_nothing():
    console, sink = plain_console()
    with ProgressBoard(console, line_seconds=0.0):
        with progress_task("preparing rows", 3, "rows", transient=True) as task:
            task.advance(3)
        with progress_task("hidden", 3, enabled=False) as none:
            assert none is None
    assert "preparing rows: 3/3" in sink.getvalue()  # a periodic line while it ran
    assert sink.getvalue().count("\n") == 1


def test_stages_advance_the_overall_task_by_their_weight():
    """Overall 10 units: a stage of weight 6 whose task reaches half way shows 3, its end 6; a stage of weight 4
    whose only task is transient still counts 4 when it ends; the line extrapolates the pace."""
    console, sink = plain_console()
    with ProgressBoard(console, line_seconds=3600.0) as board:
        overall = board.start_overall("job", 10)
        with board.stage(6):
            with progress_task("sft", 4, "steps") as task:
                task.advance(2)
                assert overall.completed == 3.0
            assert overall.completed == 6.0
        with board.stage(4), progress_task("prep", 2, transient=True) as prep:
            prep.advance(2)
            assert overall.completed == 6.0  # transient tasks carry no weight
        assert overall.completed == 10.0
        assert re.fullmatch(r"job: 100% of the estimated work, 0:00 elapsed", board.overall_line())


def test_no_library_behaviour_reads_an_environment_variable_but_the_launchers():
    """No hidden switches: behaviour is set by config or flags. Only what the launchers set is read: the ranks
    (torchrun, accelerate, deepspeed) and the mixed precision of an accelerate config, checked against align's."""
    allowed = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "ACCELERATE_MIXED_PRECISION"}
    root = Path(__file__).resolve().parents[2]
    found = []
    for path in [*root.joinpath("align").rglob("*.py"), *root.joinpath("data_builders").rglob("*.py")]:
        for name in re.findall(r"os\.(?:environ\.get|environ\.setdefault|getenv)\(\s*[\"'](\w+)", path.read_text()):
            if name not in allowed:
                found.append(f"{path.relative_to(root)}: {name}")
        assert "os.environ[" not in path.read_text(), path
    assert found == []
