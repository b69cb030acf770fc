"""Files and folders that are never half-written, and text files read with one-line errors.

- `atomic_output_dir` / `atomic_write_text`: build in a temporary sibling (`.NAME.tmp-PID`), rename into place;
  an interrupted process leaves the previous output or nothing, and the next run removes its temporaries.
- `check_output_target`: never replace what align did not write, unless asked.
- `utf8_text` / `read_json`: a file that is not UTF-8 or not JSON is a DataError naming the file and line.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shlex
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from align.errors import DataError


def current_command() -> str:
    """The command line that is running, as a user would type it."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("/align", "\\align", "align")):
        argv[0] = "align"
    elif argv and argv[0].endswith("__main__.py"):
        argv[0] = "python -m align"
    return " ".join(shlex.quote(a) if a != "python -m align" else a for a in argv)


# Files and folders that mark an output as align's own (safe to replace): a dataset, a run, an evaluation, a model.
OWN_MARKERS = ("dataset.json", "run.json", "metrics.json", "config.json", "settings.json", "adapter_config.json",
               "answers.jsonl.made-by.json")


def check_output_target(out: str | Path, overwrite: bool = False) -> None:
    """Refuse to replace what align did not write: an existing file, or a non-empty folder without any of
    `OWN_MARKERS`, unless `overwrite`. A missing path, an empty folder or align's own output is fine."""
    out = Path(out)
    if overwrite or not out.exists():
        return
    if not out.is_dir():
        raise DataError(out, "exists and is a file, not an output folder; pass another path, or --overwrite to "
                        "replace it")
    own = any((out / marker).exists() for marker in OWN_MARKERS) or any(out.glob("checkpoint-*"))
    if any(out.iterdir()) and not own:
        raise DataError(out, "is a folder align did not write (no dataset.json, run.json, metrics.json or model); "
                        "pass another path, or --overwrite to replace it")


def remove_stale_temporaries(path: str | Path) -> None:
    """Remove the temporaries an earlier process killed mid-write left beside `path` (`.NAME.tmp-PID`,
    `.NAME.old-PID`) when that process is gone. Another live process's temporaries are left alone."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*-*"):
        kind, _, pid = candidate.name[len(path.name) + 2:].partition("-")
        if kind not in ("tmp", "old") or not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        if candidate.is_dir():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success it replaces `out`, on any error it is removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        if not overwrite:
            shutil.rmtree(tmp, ignore_errors=True)
            raise FileExistsError(out)
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.replace(out, old)
        os.replace(tmp, out)
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)  # a file replaced with --overwrite
    else:
        os.replace(tmp, out)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a file through a temporary name and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_json(path: str | Path) -> Any:
    """A JSON file's value; a file that is not valid JSON is a DataError naming it and the line."""
    path = Path(path)
    try:
        return json.loads(utf8_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(path, f"not valid JSON ({exc.msg} at line {exc.lineno})") from None


def utf8_text(path: Path) -> str:
    """The file as UTF-8 text; a byte that is not UTF-8 is a DataError naming its line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(path, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}); save it as UTF-8",
                        row=line) from None
