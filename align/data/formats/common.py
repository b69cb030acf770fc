"""What the converters of released datasets share: placeholder stripping, turns in the data contract, image
values, one-line errors naming the file, row and field, and the row loop that keeps each row's origin.

A converter is a function `(row, where) -> list of records`; `convert_rows` runs it over a file's rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.data.io import Records
from align.errors import DataError

# Image and video placeholders as the released datasets write them: LLaVA's "<image>" (with the newline it puts
# after), Qwen-VL's "<img>path</img>", MiniGPT-4's "<ImageHere>" in "<Img><ImageHere></Img>", Video-LLaVA's
# "<video>". The image goes where the family's chat template puts it; the text keeps none of them.
_PLACEHOLDERS = re.compile(r"<Img>\s*<ImageHere>\s*</Img>\n?|<ImageHere>\n?|<img>.*?</img>\n?|<image>\n?|<video>\n?",
                           re.DOTALL)


def strip_placeholders(text: str) -> str:
    """`text` without image or video placeholders (and the newline after each), trimmed."""
    return _PLACEHOLDERS.sub("", text).strip()


def user_turn(text: str, n_images: int = 0, n_videos: int = 0) -> list[dict]:
    """One user message: its image and video items first, then the text, placeholders removed."""
    content = [{"type": "image"}] * n_images + [{"type": "video"}] * n_videos
    return [{"role": "user", "content": [*content, {"type": "text", "text": strip_placeholders(text)}]}]


def assistant_turn(text: str) -> list[dict]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


@dataclass(frozen=True)
class Where:
    """A row's place, for errors."""

    path: object
    row: int

    def fail(self, problem: str, field: str | None = None) -> DataError:
        return DataError(self.path, problem, row=self.row, field=field)


def text_of(row: Mapping, name: str, where: Where, strip: bool = False) -> str:
    """Field `name` of `row` as a non-empty string; a DataError naming it otherwise."""
    value = row.get(name)
    if isinstance(value, Mapping) and isinstance(value.get("value"), str):  # {"from": ..., "value": ...}
        value = value["value"]
    if not isinstance(value, str) or not value.strip():
        shown = "missing" if value is None else f"{type(value).__name__} {str(value)[:40]!r}"
        raise where.fail(f"expected a non-empty string, got {shown}", field=name)
    return strip_placeholders(value) if strip else value


def image_values(value: Any, where: Where, field: str) -> list:
    """A row's image reference(s) as a list: a path string, an image mapping with bytes or a path (a
    `datasets` Image value), or a list of those. None or "" means no image."""
    if value is None or value == "":
        return []
    items = value if isinstance(value, list) else [value]
    for item in items:
        if not (isinstance(item, str) and item) and not (isinstance(item, Mapping) and
                                                          (item.get("bytes") or item.get("path"))):
            raise where.fail(f"expected an image path or an image with bytes, got {type(item).__name__}",
                             field=field)
    return list(items)


def json_field(row: Mapping, name: str, where: Where) -> Any:
    """Field `name`, parsed when it is a JSON string (some releases store a row's texts as one JSON string)."""
    value = row.get(name)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise where.fail(f"not valid JSON ({exc.msg})", field=name) from None
    return value


def number_of(row: Mapping, name: str, where: Where) -> float:
    value = row.get(name)
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise where.fail(f"expected a number, got {type(value).__name__} {str(value)[:20]!r}", field=name)
    return float(value)


def row_id(row: Mapping, where: Where, *names: str) -> str:
    """The row's id from the first of `names` it has (default: id), else its row number."""
    for name in names or ("id",):
        value = row.get(name)
        if value is not None and str(value).strip():
            return str(value)
    return str(where.row)


def convert_rows(records: Records, path: object, convert: Callable[[Mapping, Where], Iterable[dict]],
                 kind: str, image_root: str | Path | None = None) -> Records:
    """Run `convert` over every row; the result keeps each output record's source origin, the input's base
    folder and image root (image paths resolve as they did), and the record kind."""
    origins = records.origins or [(path, i + 1) for i in range(len(records))]
    out, out_origins = [], []
    for row, (file, number) in zip(records, origins, strict=True):
        where = Where(file, number)
        if not isinstance(row, Mapping):
            raise where.fail(f"expected a JSON object, got {type(row).__name__}")
        for record in convert(row, where):
            out.append(record)
            out_origins.append((file, number))
    return Records(out, path=records.path or path, base_dir=records.base_dir,
                   image_root=image_root if image_root is not None else records.image_root, info=records.info,
                   origins=out_origins, kind=kind)
