"""Records <-> Arrow tables: how rows are stored in parquet shards, and read back from Arrow-based files.

Storage rules for the parquet shards `write_records` makes. Columns are native Arrow types, so that
`datasets.load_dataset("parquet", data_files=...)` gives rows TRL reads as conversations, unchanged:
- Message columns (prompt, chosen, rejected, messages): lists of `{role, content}` structs whose content is a list
  of `{type, text}` parts (plus any other keys the parts carry). A message written with plain string content is
  stored as one text part, the form TRL's vision trainers use; readers of the contract accept both.
- Other nested columns (spans as lists of integer pairs, objects, a mapping `meta`, ...) are Arrow lists and
  structs; structs unify their rows' keys, filling absent ones with null.
- Image columns (`images`, `corrupted_images`): `list<struct<bytes: binary, path: string>>`, declared as the
  `datasets` Image feature in the schema's `huggingface` metadata, so `load_dataset` decodes them to PIL images;
  a path is `{"path": p}`, raw bytes `{"bytes": b}` and, only in a column holding videos, a video is
  `{"frames": [...]}` (no Image feature then).
- Scalars (id, scores, method, ...) are plain Arrow columns.
- A column Arrow cannot type (values that mix strings and numbers, say) is stored as one JSON text per cell and
  listed under `json_columns` in the schema metadata key `align`, so readers undo it exactly. Shards written by
  align before version 0.2 stored every nested column that way; they read back the same.
- Null cells are absent columns and null struct fields absent keys: the contract treats null and absent the same,
  so readers drop them.

Arrow files written by others (`datasets.save_to_disk`, a TRL parquet) store messages as nested structs that
fill absent keys with null; readers drop those null keys too.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from align.data.images import is_video
from align.errors import DataError

METADATA_KEY = b"align"
HF_METADATA_KEY = b"huggingface"
MESSAGE_COLUMNS = ("prompt", "chosen", "rejected", "messages")


def plan_columns(rows: list[Mapping], image_columns: set[str], first: list[str]) -> dict[str, Any]:
    """Column order and storage for a whole dataset, decided once so that every shard has the same schema.

    `rows` must already be in stored form (`stored_row`). A column whose values Arrow cannot type together goes
    to `json_columns`; every other column gets the Arrow type inferred over all rows, in `types`."""
    import pyarrow as pa

    order = [c for c in first if any(c in r for r in rows)]
    for row in rows:
        order += [c for c in row if c not in order]
    json_columns, video_columns, types = [], [], {}
    for column in order:
        values = [r.get(column) for r in rows]
        if column in image_columns:
            if any(is_video(img) for v in values if v is not None for img in v):
                video_columns.append(column)
            continue
        try:
            types[column] = pa.array(values).type
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            json_columns.append(column)
    return {
        "columns": order,
        "json_columns": json_columns,
        "image_columns": [c for c in order if c in image_columns],
        "video_columns": video_columns,
        "types": types,
    }


def stored_row(row: Mapping) -> dict:
    """A record as the shards store it: message content as a list of parts."""
    out = dict(row)
    for column in MESSAGE_COLUMNS:
        if isinstance(out.get(column), list):
            out[column] = [_parts_message(m) for m in out[column]]
    return out


def _parts_message(message: Any) -> Any:
    if isinstance(message, Mapping) and isinstance(message.get("content"), str):
        return {**message, "content": [{"type": "text", "text": message["content"]}]}
    return message


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _image_type(with_frames: bool):
    import pyarrow as pa

    fields = [("bytes", pa.binary()), ("path", pa.string())]
    if with_frames:
        fields.append(("frames", pa.list_(pa.struct(fields))))
    return pa.list_(pa.struct(fields))


def _encode_image(value: Any, with_frames: bool) -> dict:
    if is_video(value):
        return {"bytes": None, "path": None, "frames": [_encode_image(f, False) for f in value]}
    if isinstance(value, (bytes, bytearray, memoryview)):
        cell = {"bytes": bytes(value), "path": None}
    elif isinstance(value, Mapping):
        cell = {"bytes": value.get("bytes"), "path": value.get("path")}
    else:
        cell = {"bytes": None, "path": os.fspath(value)}
    if with_frames:
        cell["frames"] = None
    return cell


def _decode_image(cell: Mapping) -> Any:
    if cell.get("frames") is not None:
        return [_decode_image(f) for f in cell["frames"]]
    data, path = cell.get("bytes"), cell.get("path")
    if data is not None and path is not None:
        return {"bytes": data, "path": path}
    return data if data is not None else path


def encode_table(rows: list[Mapping], plan: Mapping[str, Any]):
    """A pyarrow Table of `rows` (in stored form), stored as `plan` says, with the plan in the schema metadata
    and the `datasets` features (Image for image columns) under `huggingface`."""
    import pyarrow as pa

    arrays, names = [], []
    for column in plan["columns"]:
        values = [r.get(column) for r in rows]
        if column in plan["image_columns"]:
            frames = column in plan["video_columns"]
            cells = [None if v is None else [_encode_image(x, frames) for x in v] for v in values]
            arrays.append(pa.array(cells, type=_image_type(frames)))
        elif column in plan["json_columns"]:
            cells = [None if v is None else json.dumps(v, ensure_ascii=False) for v in values]
            arrays.append(pa.array(cells, type=pa.string()))
        else:
            arrays.append(pa.array(values, type=plan["types"][column]))
        names.append(column)
    table = pa.Table.from_arrays(arrays, names=names)
    meta = {k: plan[k] for k in ("json_columns", "image_columns")}
    return table.replace_schema_metadata({
        METADATA_KEY: json.dumps(meta).encode(),
        HF_METADATA_KEY: _datasets_features(table.schema, plan),
    })


def _datasets_features(schema, plan: Mapping[str, Any]) -> bytes:
    """The schema's `datasets` features, image columns declared as lists of the Image feature."""
    import datasets

    features = datasets.Features.from_arrow_schema(schema)
    for column in plan["image_columns"]:
        if column not in plan["video_columns"]:
            features[column] = datasets.List(datasets.Image())
    return features.arrow_schema.metadata[HF_METADATA_KEY]


def _drop_null_keys(value: Any) -> Any:
    if isinstance(value, list):
        return [_drop_null_keys(v) for v in value]
    if isinstance(value, dict):
        return {k: _drop_null_keys(v) for k, v in value.items() if v is not None}
    return value


def decode_table(table, path: object) -> list[dict]:
    """Rows of a table: undo our storage rules when the metadata says they apply; drop null cells and null keys
    of nested values."""
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    meta = json.loads(raw) if raw else None
    rows = table.to_pylist()
    for i, row in enumerate(rows):
        if meta is not None:
            for column in meta["json_columns"]:
                if row.get(column) is not None:
                    try:
                        row[column] = json.loads(row[column])
                    except json.JSONDecodeError as exc:
                        raise DataError(path, f"stored JSON text is malformed: {exc}", row=i + 1, field=column) from None
            for column in meta["image_columns"]:
                if row.get(column) is not None:
                    row[column] = [_decode_image(cell) for cell in row[column]]
        skip = set(meta["json_columns"] + meta["image_columns"]) if meta is not None else set()
        for column, value in row.items():
            if column not in skip and isinstance(value, (list, dict)):
                row[column] = _drop_null_keys(value)
        rows[i] = {k: v for k, v in row.items() if v is not None}
    return rows


def read_jsonl(path: Path) -> tuple[list[dict], list[int]]:
    """(rows, their line numbers): blank lines are skipped, so row numbers are the lines an editor shows."""
    rows, numbers = [], []
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DataError(path, "not UTF-8 text", row=number) from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                hint = ""
                if not rows and line.lstrip().startswith("["):
                    hint = "; the file holds one JSON array, not JSON Lines: name it .json, or write one object per line"
                raise DataError(path, f"malformed JSON on line {number}: {exc.msg} (column {exc.colno}){hint}",
                                row=number) from None
            if not isinstance(row, dict):
                hint = " (a JSON array: name the file .json, or write one object per line)" if isinstance(row, list) \
                    else ""
                raise DataError(path, f"expected a JSON object on line {number}, got {type(row).__name__}{hint}",
                                row=number)
            rows.append(row)
            numbers.append(number)
    return rows, numbers


def read_json(path: Path) -> tuple[list[dict], list[int]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise DataError(path, "not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise DataError(path, f"malformed JSON on line {exc.lineno}, column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, list):
        raise DataError(path, f"expected a JSON list of records, got {type(data).__name__}")
    for i, row in enumerate(data):
        if not isinstance(row, dict):
            raise DataError(path, f"expected a JSON object, got {type(row).__name__}", row=i + 1)
    return data, list(range(1, len(data) + 1))


def read_parquet(path: Path) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(path, f"not a readable parquet file: {exc}") from None
    return decode_table(table, path)


def write_parquet(path: Path, rows: list[Mapping], plan: Mapping[str, Any]) -> None:
    import pyarrow.parquet as pq

    pq.write_table(encode_table(rows, plan), path)


def read_saved_dataset(folder: Path) -> list[dict]:
    """Rows of a `datasets.save_to_disk` folder, images left as {"bytes", "path"} (not decoded to PIL)."""
    import datasets

    try:
        saved = datasets.load_from_disk(str(folder))
    except Exception as exc:  # datasets raises many types for a damaged folder; say which folder it was
        raise DataError(folder, f"not a readable datasets.save_to_disk folder: {exc}") from None
    if isinstance(saved, datasets.DatasetDict):
        splits = ", ".join(saved)
        raise DataError(folder, f"holds several splits ({splits}); pass one split's folder, e.g. {folder}/<split>")
    # The Arrow view keeps Image features as their {"bytes", "path"} storage instead of decoding them.
    return decode_table(saved.with_format("arrow")[:], folder)
