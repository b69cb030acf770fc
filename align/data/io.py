"""Dataset files on disk: atomic output folders and the `dataset.json` that describes each one.

Nothing is ever half-written: outputs are built in a temporary sibling folder and renamed into place when
complete, so an interrupted run leaves either the previous output or nothing.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shlex
import shutil
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
DATASET_JSON = "dataset.json"


def current_command() -> str:
    """The command line that is running, as a user would type it."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("/align", "\\align", "align")):
        argv[0] = "align"
    elif argv and argv[0].endswith("__main__.py"):
        argv[0] = "python -m align"
    return " ".join(shlex.quote(a) if a != "python -m align" else a for a in argv)


@contextlib.contextmanager
def atomic_output_dir(out: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder beside `out`; on success it replaces `out`, on any error it is removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
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
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write a file through a temporary name and rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_dataset_json(
    folder: str | Path,
    kind: str,
    counts: Mapping[str, int],
    settings: Mapping[str, Any] | None = None,
    method: str | None = None,
    command: str | None = None,
    files: Mapping[str, str] | None = None,
    include_timestamp: bool = False,
) -> Path:
    """`dataset.json`: schema version, record kind, counts, settings and the command that made the folder.

    `include_timestamp` is off by default so the same inputs give byte-identical folders.
    """
    payload: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "method": method,
        "counts": dict(counts),
        "settings": dict(settings or {}),
        "files": dict(files or {}),
        "command": command if command is not None else current_command(),
    }
    if include_timestamp:
        payload["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return atomic_write_text(Path(folder) / DATASET_JSON, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def read_dataset_json(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / DATASET_JSON
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def write_jsonl(path: str | Path, rows: Any) -> int:
    """Write rows (dicts) as JSON Lines through a temporary file; returns the row count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    n = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n
