"""Training progress: a Trainer's optimizer steps as an `align.progress` task, in place of transformers' tqdm bar.

    with training_progress(trainer, "sft", enabled=progress):
        trainer.train()

On a terminal: a rich bar with steps, elapsed and remaining time, and the last logged loss. Elsewhere: a plain
line every 30 s. When transformers would have drawn its own bar (`disable_tqdm` false), its log lines are printed
above ours instead; with `disable_tqdm` true its PrinterCallback keeps printing the logs to stdout, where a caller
may have redirected them (the quickstart writes them to its log file).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from transformers import TrainerCallback
from transformers.trainer_callback import ProgressCallback

from align.progress import ProgressTask, progress_task

# Logged values shown beside the bar, in this order, when present.
SHOWN = ("loss", "rewards/margins", "rewards/accuracies", "rewards/task")


class _StepProgress(TrainerCallback):
    def __init__(self, label: str, print_logs: bool):
        self.label, self.print_logs = label, print_logs
        self.task: ProgressTask | None = None
        self._stack = contextlib.ExitStack()
        self._shown: dict[str, str] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.task is None:
            self.task = self._stack.enter_context(progress_task(self.label, state.max_steps, "steps",
                                                                completed=state.global_step))

    def on_step_end(self, args, state, control, **kwargs):
        if self.task is not None:
            self.task.update(state.global_step, **self._shown)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.task is None or not logs:
            return
        self._shown = {key.split("/")[-1]: f"{logs[key]:.4g}" for key in SHOWN
                       if isinstance(logs.get(key), (int, float))}
        if self.print_logs:
            values = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in logs.items())
            self.task.board.print(f"{self.label} step {state.global_step}: {values}")

    def close(self, failed: bool = False) -> None:
        if failed and self.task is not None:
            self.task.transient = True  # no closing line between the user and the error
        self._stack.close()
        self.task = None


@contextlib.contextmanager
def training_progress(trainer, label: str, enabled: bool = True) -> Iterator[None]:
    """Show `trainer`'s steps as a progress task while the block runs (only on the main process)."""
    if not enabled:
        yield
        return
    had_tqdm = any(isinstance(cb, ProgressCallback) for cb in trainer.callback_handler.callbacks)
    trainer.remove_callback(ProgressCallback)
    callback = _StepProgress(label, print_logs=had_tqdm)
    trainer.add_callback(callback)
    try:
        yield
    except BaseException:
        callback.close(failed=True)
        raise
    finally:
        callback.close()
        trainer.remove_callback(callback)

