"""Dataset files on disk: readers, the shard writer and `dataset.json`.

Nothing is ever half-written: outputs are built in a temporary sibling folder and renamed into place when
complete (`align.files.atomic_output_dir`), so an interrupted run leaves either the previous output or nothing.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from align.data.images import image_bytes, is_video
from align.data.schema import KINDS, detect_kind, validate_records
from align.data.storage import (
    plan_columns,
    read_json,
    read_jsonl,
    read_parquet,
    read_saved_dataset,
    stored_row,
    write_parquet,
)
from align.errors import DataError, lookup
from align.files import atomic_output_dir, atomic_write_text, current_command, remove_stale_temporaries

SCHEMA_VERSION = 1
DATASET_JSON = "dataset.json"


def write_dataset_json(
    folder: str | Path,
    kind: str,
    counts: Mapping[str, int],
    settings: Mapping[str, Any] | None = None,
    method: str | None = None,
    command: str | None = None,
    files: Mapping[str, str] | None = None,
    include_timestamp: bool = False,
    storage: Mapping[str, Any] | None = None,
) -> Path:
    """`dataset.json`: schema version, record kind, counts, settings and the command that made the folder.

    `include_timestamp` is off by default so the same inputs give byte-identical folders. `storage` says how
    columns are stored in the shards (see align/data/storage.py).
    """
    payload: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "method": method,
        "counts": dict(counts),
        "settings": dict(settings or {}),
        "files": dict(files or {}),
        **({"storage": dict(storage)} if storage is not None else {}),
        "command": command if command is not None else current_command(),
    }
    if include_timestamp:
        payload["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return atomic_write_text(Path(folder) / DATASET_JSON, json.dumps(payload, indent=2, sort_keys=False) + "\n")


def read_dataset_json(folder: str | Path) -> dict[str, Any] | None:
    """The folder's `dataset.json`, or None when it has none; a broken or too new one is a DataError."""
    path = Path(folder) / DATASET_JSON
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(path, f"malformed JSON: {exc}") from None
    if not isinstance(info, dict):
        raise DataError(path, "expected a JSON object")
    version = info.get("schema_version", SCHEMA_VERSION)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise DataError(path, f"schema_version {version!r} is newer than this align reads ({SCHEMA_VERSION}); "
                        "upgrade align")
    return info


def input_dataset_info(path: str | Path) -> dict[str, Any] | None:
    """The `dataset.json` of a dataset folder, or of the folder holding a data file (a shapes world's
    `sources.jsonl` sits beside the world's `dataset.json`); None when there is none."""
    path = Path(path)
    return read_dataset_json(path if path.is_dir() else path.parent)


def write_jsonl(path: str | Path, rows: Any) -> int:
    """Write rows (dicts) as JSON Lines through a temporary file; returns the row count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    n = 0
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


# ------------------------------------------------------------------------------------------------ readers

FILE_TYPES = (".jsonl", ".json", ".parquet")
IMAGE_MODES = ("copy", "embed", "keep")
_SHARD = re.compile(r"data-(\d+)-of-(\d+)\.parquet")


class Records(list):
    """Plain dict rows, plus where they came from: image paths resolve under `image_root` or `base_dir`, and
    `origins[i]` = (file, 1-based row) of row i for error messages. `info` is the folder's dataset.json."""

    def __init__(self, rows=(), *, path=None, base_dir=None, image_root=None, info=None, origins=None, kind=None):
        super().__init__(rows)
        self.path, self.base_dir, self.image_root = path, base_dir, image_root
        self.info, self.origins, self.kind = info, origins, kind

    @property
    def columns(self) -> list[str]:
        seen: dict[str, None] = {}
        for row in self:
            seen.update(dict.fromkeys(row))
        return list(seen)


def _read_file(path: Path) -> tuple[list[dict], list[int]]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return read_jsonl(path)
    if suffix == ".json":
        return read_json(path)
    if suffix == ".parquet":
        rows = read_parquet(path)
        return rows, list(range(1, len(rows) + 1))
    raise DataError(path, f"unknown file type '{suffix or path.name}'; expected {', '.join(FILE_TYPES)} "
                    "or a dataset folder")


def _shards(folder: Path, info: dict | None) -> list[Path]:
    """The folder's data-*.parquet shards in order; a missing shard is an error, not a smaller dataset."""
    shards = sorted(folder.glob("data-*.parquet"))
    totals = {int(m.group(2)) for s in shards if (m := _SHARD.fullmatch(s.name))}
    for total in totals:
        for k in range(total):
            name = f"data-{k:05d}-of-{total:05d}.parquet"
            if not (folder / name).is_file():
                raise DataError(folder, f"shard {name} is missing; the dataset was not copied completely")
    for name in (info or {}).get("files", {}):
        if not (folder / name).is_file():
            raise DataError(folder, f"{name}, listed in {DATASET_JSON}, is missing")
    return shards


def read_records(path: str | Path, image_root: str | Path | None = None) -> Records:
    """All rows of a dataset as plain dicts, in order; row numbers in errors start at 1 (JSONL: line numbers).

    `path` is a .jsonl, .json (a list of objects) or .parquet file, or a folder holding data-*.parquet shards
    or one .jsonl (with dataset.json), or a `datasets.save_to_disk` folder. Nothing is validated here: see
    `load_records`. Image paths in rows stay as stored; they resolve under `image_root`, else the folder of
    the file (or the dataset folder), which the result carries as `base_dir`.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "no such file or folder")
    if not path.is_dir():
        rows, numbers = _read_file(path)
        return Records(rows, path=path, base_dir=path.parent, image_root=image_root,
                       origins=[(path, n) for n in numbers])
    info = read_dataset_json(path)
    if (info or {}).get("kind") == "shapes":
        raise DataError(path, f"is a shapes world, not one dataset: pass one of its files, e.g. "
                        f"{path / 'sources.jsonl'} to build pairs, {path / 'sft.jsonl'} to fine-tune, "
                        f"{path / 'pope_all.jsonl'} to evaluate")
    common = {"path": path, "base_dir": path, "image_root": image_root, "info": info}
    if (path / "state.json").is_file() or (path / "dataset_dict.json").is_file():
        rows = read_saved_dataset(path)
        return Records(rows, origins=[(path, i + 1) for i in range(len(rows))], **common)
    shards = _shards(path, info)
    if shards:
        rows, origins = [], []
        for shard in shards:
            part = read_parquet(shard)
            rows += part
            origins += [(shard, i + 1) for i in range(len(part))]
        return Records(rows, origins=origins, **common)
    jsonls = sorted(path.glob("*.jsonl"))
    if len(jsonls) == 1:
        rows, numbers = read_jsonl(jsonls[0])
        return Records(rows, origins=[(jsonls[0], n) for n in numbers], **common)
    if jsonls:
        names = ", ".join(p.name for p in jsonls)
        raise DataError(path, f"holds several JSONL files ({names}); a dataset folder holds one")
    raise DataError(path, "no data-*.parquet shards, no JSONL file and not a datasets.save_to_disk folder")


def load_records(
    path: str | Path, kind: str | None = None, image_root: str | Path | None = None, check_images: bool = True
) -> Records:
    """`read_records`, then the record kind (dataset.json, else `kind`, else the columns) and validation.

    The result's `.kind` is set. A dataset.json kind that differs from a requested `kind` is an error.
    """
    records = read_records(path, image_root=image_root)
    declared = (records.info or {}).get("kind")
    if kind is not None and declared is not None and declared != kind:
        raise DataError(path, f"is a {declared} dataset; expected {kind} records")
    records.kind = detect_kind(records.columns, declared or kind)
    if records.kind == "source" and "question_id" in records.columns and "id" not in records.columns:
        raise DataError(path, "holds benchmark questions (question_id), not align records; they are read by "
                        "`align eval BENCH --questions FILE`")
    validate_records(records, records.kind, path, records.base_dir, image_root, check_images, records.origins)
    return records


# ------------------------------------------------------------------------------------------------ writer


def _image_columns(kind: str) -> list[str]:
    return [name for name, column in KINDS[kind].items() if column.type == "images"]


def _suffix_of(data: bytes) -> str:
    import io as _io

    from PIL import Image

    with Image.open(_io.BytesIO(data)) as img:
        return "." + (img.format or "bin").lower().replace("jpeg", "jpg")


class _ImagePlacer:
    """Rewrites the image values of rows for the output folder: files copied to images/ or bytes embedded."""

    def __init__(self, mode: str, folder: Path, base_dir, image_root):
        self.mode, self.folder, self.base_dir, self.image_root = mode, folder, base_dir, image_root
        self.written: set[str] = set()

    def place(self, value: Any, where: dict) -> Any:
        if is_video(value):
            return [self.place(frame, where) for frame in value]
        data, suffix = image_bytes(value, self.base_dir, self.image_root, **where)
        if self.mode == "embed":
            name = value.get("path") if isinstance(value, Mapping) else value if isinstance(value, str) else None
            return {"bytes": data, "path": Path(name).name} if name else data
        # Named by content: deterministic, and an image shared by many rows is stored once.
        name = hashlib.sha256(data).hexdigest()[:20] + (suffix or _suffix_of(data))
        if name not in self.written:
            (self.folder / "images").mkdir(exist_ok=True)
            (self.folder / "images" / name).write_bytes(data)
            self.written.add(name)
        return f"images/{name}"


def _check_keep(records: list, columns: list[str], base_dir, image_root, out_dir: Path, where: object) -> None:
    """images="keep" writes paths unchanged; they must still resolve from the output folder."""
    if image_root is not None or base_dir is None:
        return
    if os.path.realpath(base_dir) == os.path.realpath(out_dir):
        return
    for record in records:
        for column in columns:
            for value in record.get(column) or []:
                for frame in value if is_video(value) else [value]:
                    if isinstance(frame, str) or (isinstance(frame, Mapping) and frame.get("bytes") is None):
                        raise DataError(where, f"images='keep' would leave paths relative to {base_dir} in "
                                        f"{out_dir}; use images='copy' or 'embed', or an image root")


def write_records(
    out_dir: str | Path,
    records: Any,
    kind: str,
    method: str | None = None,
    settings: Mapping[str, Any] | None = None,
    shard_size: int = 1000,
    images: str = "copy",
    base_dir: str | Path | None = None,
    image_root: str | Path | None = None,
    overwrite: bool = True,
    counts_extra: Mapping[str, int] | None = None,
    command: str | None = None,
    check_images: bool = True,
) -> Path:
    """Validate `records` as `kind` and write a dataset folder atomically; returns `out_dir`.

    `counts_extra` adds to dataset.json's counts (a builder's rows read and skipped); `command` overrides the
    recorded command line; `check_images=False` skips decoding images a caller has already checked.

    The folder holds data-0000K-of-0000N.parquet shards of `shard_size` rows (storage rules in
    align/data/storage.py), dataset.json, and with images="copy" an images/ folder (files named by content,
    rows hold "images/<name>"). images="embed" stores the bytes in the shards as {"bytes", "path"};
    images="keep" writes image values unchanged. Image paths in `records` resolve under `image_root`, else
    `base_dir`; both default to those of a `Records` list. On any error nothing is left at `out_dir`.
    """
    lookup(dict.fromkeys(IMAGE_MODES), "image mode", images)
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    base_dir = base_dir if base_dir is not None else getattr(records, "base_dir", None)
    image_root = image_root if image_root is not None else getattr(records, "image_root", None)
    origins = getattr(records, "origins", None)
    where = getattr(records, "path", None) or f"records for {out_dir}"
    records = list(records)
    columns = _image_columns(kind)
    out_dir = Path(out_dir)
    with atomic_output_dir(out_dir, overwrite=overwrite) as tmp:
        validate_records(records, kind, where, base_dir, image_root, check_images=check_images, origins=origins)
        if images == "keep":
            _check_keep(records, columns, base_dir, image_root, out_dir, where)
        else:
            placer = _ImagePlacer(images, tmp, base_dir, image_root)
            records = [dict(r) for r in records]
            for i, record in enumerate(records):
                file, row = origins[i] if origins else (where, i + 1)
                for column in columns:
                    if record.get(column) is not None:
                        at = {"path": file, "row": row, "field": column}
                        record[column] = [placer.place(v, at) for v in record[column]]
        records = [stored_row(r) for r in records]
        plan = plan_columns(records, set(columns), first=list(KINDS[kind]))
        n_shards = max(1, math.ceil(len(records) / shard_size))
        files = {}
        for k in range(n_shards):
            name = f"data-{k:05d}-of-{n_shards:05d}.parquet"
            try:
                write_parquet(tmp / name, records[k * shard_size : (k + 1) * shard_size], plan)
            except (TypeError, ValueError, OverflowError) as exc:  # pyarrow's errors derive from these
                raise DataError(where, f"cannot store the records as parquet: {exc}") from None
            files[name] = hashlib.sha256((tmp / name).read_bytes()).hexdigest()
        n_images = sum(len(r.get("images") or []) for r in records)
        storage = {"images": images, **{k: plan[k] for k in ("json_columns", "image_columns")}}
        counts = {"rows": len(records), "images": n_images, "shards": n_shards, **(counts_extra or {})}
        write_dataset_json(tmp, kind, counts, settings=settings, method=method, files=files, storage=storage,
                           command=command)
    return out_dir
