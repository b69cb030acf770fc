"""`align data show`: a dataset's schema, counts and sample rows, after validating it against the contract."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from align.data.images import describe_image
from align.data.io import Records, load_records
from align.data.schema import IMAGE_TOKEN, KINDS, TYPE_NAMES, completion_text, message_text

TEXT_LIMIT = 160  # characters of a text cell in sample rows; whole conversations would bury the table


def _truncate(text: str, limit: int = TEXT_LIMIT) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _words(messages: list[Mapping] | None) -> int:
    return sum(len(message_text(m).split()) for m in messages or [])


def _mean(values: list[float]) -> str:
    return f"{sum(values) / len(values):.1f}" if values else "-"


def column_types(records: Records, kind: str) -> list[tuple[str, str, int]]:
    """(column, type, non-null count) for every column present: the contract's type, else what the data holds."""
    declared = KINDS[kind]
    present = records.columns
    out = []
    for column in [c for c in declared if c in present] + [c for c in present if c not in declared]:
        values = [r[column] for r in records if r.get(column) is not None]
        if column in declared:
            type_name = TYPE_NAMES[declared[column].type]
        else:
            type_name = " | ".join(sorted({type(v).__name__ for v in values})) or "null"
        out.append((column, type_name, len(values)))
    return out


def dataset_counts(records: Records, kind: str) -> list[tuple[str, str]]:
    """(label, value) rows of the counts table: totals, then statistics that matter for this kind."""
    n = len(records)
    images = [img for r in records for img in r.get("images") or []]
    counts = [
        ("rows", str(n)),
        ("images", str(len(images))),
        ("distinct ids", str(len({r.get("id") for r in records}))),
    ]
    videos = sum(isinstance(img, list) for img in images)
    if videos:
        counts.append(("videos", str(videos)))
    if kind == "preference":
        counts += [
            ("mean prompt words", _mean([_words(r.get("prompt")) for r in records])),
            ("mean chosen words", _mean([len(completion_text(r["chosen"]).split()) for r in records])),
            ("mean rejected words", _mean([len(completion_text(r["rejected"]).split()) for r in records])),
            ("rows with spans", str(sum(bool(r.get("chosen_spans") or r.get("rejected_spans")) for r in records))),
            ("rows with scores", str(sum(r.get("chosen_score") is not None or r.get("rejected_score") is not None
                                         for r in records))),
            ("rows with corrupted images", str(sum(r.get("corrupted_images") is not None for r in records))),
        ]
    elif kind == "sft":
        turns = [[m for m in r["messages"] if m.get("role") == "assistant"] for r in records]
        counts += [
            ("mean assistant turns", _mean([len(t) for t in turns])),
            ("mean user words", _mean([_words([m for m in r["messages"] if m.get("role") == "user"])
                                       for r in records])),
            ("mean assistant words", _mean([_words(t) for t in turns])),
        ]
    else:
        for column in ("caption", "objects", "question", "answer", "responses", "ratings"):
            present = sum(r.get(column) is not None for r in records)
            if present:
                counts.append((f"rows with {column}", str(present)))
        if any("objects" in r for r in records):
            counts.append(("mean objects per row", _mean([len(r.get("objects") or []) for r in records])))
    methods = Counter(r.get("method") for r in records if r.get("method"))
    if methods:
        counts.append(("methods", ", ".join(f"{m} ({c})" for m, c in methods.most_common(5))))
    return counts


def _shown_text(message: Mapping) -> str:
    """Message text with image/video items shown where they sit, as LLaVA-style tokens."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    marks = {"image": IMAGE_TOKEN, "video": "<video>"}
    return " ".join(item.get("text") or "" if item.get("type") == "text" else marks.get(item.get("type"), "?")
                    for item in content or [])


def _cell(column: str, value: Any, record: Mapping, records: Records) -> str:
    """One value of a sample row as short text: messages as 'role: text', images as path + size."""
    if column in ("images", "corrupted_images"):
        return "\n".join(describe_image(v, records.base_dir, records.image_root) for v in value) or "(none)"
    if column in ("prompt", "chosen", "rejected", "messages") and isinstance(value, list):
        return "\n".join(f"{m.get('role')}: {_truncate(_shown_text(m))}" for m in value)
    if column.endswith("_spans") and isinstance(value, list):
        text = completion_text(record.get(column[: -len("_spans")]) or [])
        return "\n".join(f"[{s}, {e}) {_truncate(text[s:e], 60)!r}" for s, e in value) or "(none)"
    if isinstance(value, str):
        return _truncate(value)
    return _truncate(json.dumps(value, ensure_ascii=False, default=repr))


def show_dataset(path: str | Path, rows: int = 3, image_root: str | Path | None = None) -> None:
    """Validate the dataset at `path` (DataError on the first problem) and print schema, counts and samples."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    records = load_records(path, image_root=image_root)
    if not records:
        from align.errors import DataError

        raise DataError(path, "has no rows")
    kind = records.kind
    console = Console(highlight=False, emoji=False)
    method = (records.info or {}).get("method")
    console.print(Text(f"{path}: {kind} records" + (f" made by {method}" if method else "")), style="bold")

    schema = Table(title="schema", title_justify="left")
    for name in ("column", "type", "non-null"):
        schema.add_column(name, justify="right" if name == "non-null" else "left")
    for column, type_name, non_null in column_types(records, kind):
        schema.add_row(Text(column), Text(type_name), str(non_null))
    console.print(schema)

    counts = Table(title="counts", title_justify="left")
    counts.add_column("count")
    counts.add_column("value", justify="right")
    for label, value in dataset_counts(records, kind):
        counts.add_row(label, Text(value))
    console.print(counts)

    for i, record in enumerate(records[:rows]):
        file, row = records.origins[i] if records.origins else (path, i + 1)
        sample = Table(title=f"row {row} of {Path(file).name}", title_justify="left", show_header=False)
        sample.add_column("column", style="bold")
        sample.add_column("value", overflow="fold")
        for column, value in record.items():
            sample.add_row(Text(column), Text(_cell(column, value, record, records)))
        console.print(sample)
