"""What a training run leaves in its output folder, and how a rerun reads it.

- `run.json` is written when training starts (`complete: false`, the resolved settings) and again when it ends
  (`complete: true`, results). `--resume` continues only a run with the same settings (`check_resume`); a finished
  one with the same settings is not trained again, one with other settings is refused with what differs.
- A checkpoint is complete once transformers has written its `trainer_state.json`, the last file of a checkpoint
  (after the weights, optimizer, scheduler and RNG states). `--resume` takes the newest complete checkpoint
  (`last_complete_checkpoint`); a newer one cut short by a crash is removed, never loaded.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from align.distributed import is_main_process
from align.errors import ConfigError
from align.train.common import write_run_json

# Settings that do not change what a run computes: where it writes, how often it logs or saves, the display.
NOT_RESULT_SETTINGS = frozenset({
    "output_dir", "logging_dir", "logging_steps", "logging_strategy", "logging_first_step", "logging_nan_inf_filter",
    "save_steps", "save_strategy", "save_total_limit", "save_only_model", "save_on_each_node", "report_to",
    "run_name", "disable_tqdm", "resume_from_checkpoint", "dataloader_num_workers", "dataloader_prefetch_factor",
    "dataloader_persistent_workers", "dataloader_pin_memory", "push_to_hub", "hub_model_id", "hub_strategy",
    "hub_token", "hub_private_repo", "hub_always_push", "hub_revision", "project", "trackio_space_id",
    "trackio_bucket_id", "trackio_static_space_id", "log_level", "log_level_replica", "log_on_each_node",
    "skip_memory_metrics", "ref_cache_dir",
})
_CHECKPOINT = re.compile(r"checkpoint-(\d+)$")


def read_run_json(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / "run.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None


def is_finished(folder: str | Path) -> bool:
    return bool((read_run_json(folder) or {}).get("complete"))


def settings_diff(previous: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`key: old -> new` for every setting both records hold that changes the result."""
    return [f"{key}: {previous[key]!r} -> {current[key]!r}" for key in sorted(set(previous) & set(current))
            if key not in NOT_RESULT_SETTINGS and previous[key] != current[key]]


def check_resume(folder: str | Path, config: dict[str, Any]) -> bool:
    """Before `--resume`: True when `folder` holds this run already finished (nothing to train); a ConfigError
    when it holds a run with other settings. A folder without a record (or an empty one) resumes as it is."""
    record = read_run_json(folder)
    if record is None:
        return False
    changed = settings_diff(record.get("config") or {}, json.loads(json.dumps(config, default=str)))
    if changed:
        shown = "; ".join(changed[:6]) + (f"; and {len(changed) - 6} more" if len(changed) > 6 else "")
        raise ConfigError(f"{folder} holds a run with other settings ({shown}); --resume continues only the same "
                          "run: use another --output-dir, or drop --resume to start over there")
    return bool(record.get("complete"))


def checkpoint_is_complete(folder: Path) -> bool:
    try:
        json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return True


def last_complete_checkpoint(folder: str | Path, remove_incomplete: bool = True) -> str | None:
    """The newest complete `checkpoint-N` in `folder`; newer incomplete ones are removed (a crash cut them short)."""
    from align.progress import active_board

    folder = Path(folder)
    if not folder.is_dir():
        return None
    found = sorted(((int(m.group(1)), p) for p in folder.iterdir()
                    if p.is_dir() and (m := _CHECKPOINT.fullmatch(p.name))), reverse=True)
    for _, path in found:
        if checkpoint_is_complete(path):
            return str(path)
        if remove_incomplete and is_main_process():
            board = active_board()
            message = f"{path} was cut short (no trainer_state.json); removed, resuming from an earlier one"
            (board.print if board else _stderr)(message)
            shutil.rmtree(path, ignore_errors=True)
    return None


def _stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr)


def start_record(folder: str | Path, command: str, config: dict[str, Any]) -> None:
    """run.json with `complete: false` and the settings, written as training starts (main process only), so a
    crashed run's folder says what it was and `--resume` can check it."""

    if is_main_process():
        write_run_json(folder, command, config, {"complete": False})


def no_empty_output_on_failure(run):
    """Decorator of the `run_*` functions (config first). Before the run: an output_dir that align did not write is
    refused unless `overwrite=True` (`check_output_target`). When the run fails, an output folder it created and
    left empty (or holding only the start record of a run that never reached a checkpoint) is removed, so a config
    or data error leaves nothing behind. Checkpoints a run wrote stay, with their record (they resume)."""
    import functools

    @functools.wraps(run)
    def wrapper(config, *args, overwrite: bool = False, **kwargs):
        from align.files import check_output_target

        out = Path(config.output_dir) if getattr(config, "output_dir", None) else None
        if out is not None and is_main_process():
            check_output_target(out, overwrite)
            if overwrite and out.is_file():
                out.unlink()
        existed = out is not None and out.exists()
        try:
            return run(config, *args, **kwargs)
        except BaseException:
            if out is not None and not existed and out.is_dir() and is_main_process():
                if not any(out.glob("checkpoint-*")) and (read_run_json(out) or {}).get("complete") is False:
                    (out / "run.json").unlink()  # the start record of a run that failed before its first checkpoint
                for folder in sorted((p for p in out.rglob("*") if p.is_dir()), reverse=True):
                    if not any(folder.iterdir()):
                        folder.rmdir()
                if not any(out.iterdir()):
                    out.rmdir()
            raise

    return wrapper
