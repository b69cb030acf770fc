"""The record contract, as data, and its validation.

Three kinds of record (README, Data format):
- "preference": TRL's conversational preference format plus spans, scores, corrupted images, method and meta;
- "sft": `id`, `images`, `messages` (user/assistant turns);
- "source": what pair builders start from: `id`, `images` and caption / objects / question / answer / ...

A message is `{"role": str, "content": str | list of items}`; an item is `{"type": "text", "text": str}`,
`{"type": "image"}` or `{"type": "video"}`. The image items, and literal `<image>` tokens in text (LLaVA data),
mark where each entry of `images` goes, so their number must equal the number of images.

`null` and an absent optional column mean the same. Unknown extra columns are kept and not checked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.data.images import IMAGE_VALUE_HELP, is_video, load_media, resolve_image
from align.data.messages import (  # noqa: F401  (re-exported: the contract's text helpers)
    IMAGE_TOKEN,
    ROLES,
    completion_text,
    count_placeholders,
    message_problem,
    message_text,
)
from align.errors import DataError, lookup


@dataclass(frozen=True)
class Column:
    type: str  # a key of CHECKS
    required: bool = False
    help: str = ""
    of: str | None = None  # spans: the completion column whose text they index


_ID = Column("id", True, "stable id, unique in the dataset")
_IMAGES = Column("images", True, "the prompt's images in placeholder order; a video is a list of frames")
_METHOD = Column("str", help="which builder made the row")
_META = Column("json", help="builder settings for this row (JSON text or a mapping)")

KINDS: dict[str, dict[str, Column]] = {
    "preference": {
        "id": _ID,
        "images": _IMAGES,
        "prompt": Column("prompt", True, "user turn(s); image items mark where each image goes"),
        "chosen": Column("completion", True, "one assistant message"),
        "rejected": Column("completion", True, "one assistant message"),
        "chosen_spans": Column("spans", help="[start, end) character spans of the chosen text", of="chosen"),
        "rejected_spans": Column("spans", help="[start, end) character spans of the rejected text", of="rejected"),
        "chosen_score": Column("number", help="rating of the chosen completion"),
        "rejected_score": Column("number", help="rating or hallucination severity of the rejected completion"),
        "corrupted_images": Column("images", help="degraded images for image-conditioned losses (mDPO)"),
        "method": _METHOD,
        "meta": _META,
    },
    "sft": {
        "id": _ID,
        "images": _IMAGES,
        "messages": Column("conversation", True, "user/assistant turns"),
        "method": _METHOD,
        "meta": _META,
    },
    "prompt": {
        "id": _ID,
        "images": _IMAGES,
        "prompt": Column("prompt", True, "user turn(s) to answer; image items mark where each image goes"),
        "method": _METHOD,
        "meta": _META,
    },
    "source": {
        "id": _ID,
        "images": _IMAGES,
        "caption": Column("str"),
        "objects": Column("objects", help='list of {"name", "color", "size", "count", "bbox"}; name required'),
        "question": Column("str"),
        "answer": Column("str"),
        "responses": Column("str_list", help="candidate responses to the question (feedback builders)"),
        "response": Column("str", help="one response of the policy, to be corrected (correct)"),
        "ratings": Column("ratings", help="per response, its rating or {aspect: rating} (vlfeedback)"),
        "original": Column("str", help="a model's response, before correction (rlhfv)"),
        "corrected": Column("str", help="the same response with its hallucinations corrected (rlhfv)"),
        "method": _METHOD,
        "meta": _META,
    },
}

# How each column type reads in `align data show` and in error messages.
TYPE_NAMES = {
    "id": "str",
    "str": "str",
    "number": "float",
    "json": "JSON str",
    "images": "list of image",
    "prompt": "list of messages",
    "completion": "list of messages",
    "conversation": "list of messages",
    "spans": "list of [start, end)",
    "objects": "list of objects",
    "str_list": "list of str",
    "ratings": "list or mapping",
}


class _Bad(Exception):
    """A problem with one column's value; validate_record adds file, row and field."""


@dataclass
class _Context:
    base_dir: Path | None
    image_root: Path | None
    check_images: bool
    cache: dict  # resolved image file -> None; avoids decoding an image shared by many rows twice


# ---------------------------------------------------------------------------------------- column checks


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_id(value, record, column, ctx):
    if not isinstance(value, str) or not value.strip():
        raise _Bad(f"expected a non-empty string id, got {_type(value)} {value!r:.40}")


def _check_str(value, record, column, ctx):
    if not isinstance(value, str):
        raise _Bad(f"expected a string, got {_type(value)}")


def _check_number(value, record, column, ctx):
    if not _is_number(value) or not math.isfinite(value):
        raise _Bad(f"expected a finite number, got {_type(value)} {value!r:.40}")


def _check_json(value, record, column, ctx):
    if isinstance(value, Mapping):
        return
    if not isinstance(value, str):
        raise _Bad(f"expected JSON text or a mapping, got {_type(value)}")
    try:
        json.loads(value)
    except json.JSONDecodeError as exc:
        raise _Bad(f"not valid JSON text: {exc}") from None


def _check_messages(value: Any, roles: tuple[str, ...] = ROLES) -> None:
    problem = message_problem(value, roles)
    if problem is not None:
        raise _Bad(problem)


def _check_prompt(value, record, column, ctx):
    _check_messages(value)
    if value[-1]["role"] != "user":
        raise _Bad(f"the last prompt message has role {value[-1]['role']!r}; expected 'user'")


def _check_completion(value, record, column, ctx):
    _check_messages(value, roles=("assistant",))
    if len(value) != 1:
        raise _Bad(f"expected exactly one assistant message, got {len(value)}")
    if not completion_text(value).strip():
        raise _Bad("empty completion: the assistant text is empty or whitespace")


def _check_conversation(value, record, column, ctx):
    _check_messages(value)
    replies = [m for m in value if m["role"] == "assistant"]
    if not replies:
        raise _Bad("no assistant message to learn from")
    first = next(i for i, m in enumerate(value) if m["role"] != "system")
    if value[first]["role"] != "user":
        raise _Bad(f"message {first} is an {value[first]['role']} turn before any user turn; a conversation starts "
                   "with the user (after an optional system message)")
    for i, message in enumerate(value):
        if message["role"] == "assistant" and not message_text(message).strip():
            raise _Bad(f"empty completion: assistant message {i} is empty or whitespace")


def _check_spans(value, record, column, ctx):
    if not isinstance(value, list):
        raise _Bad(f"expected a list of [start, end) pairs, got {_type(value)}")
    text = completion_text(record[column.of])
    for i, span in enumerate(value):
        if not (isinstance(span, (list, tuple)) and len(span) == 2 and all(_is_int(x) for x in span)):
            raise _Bad(f"span {i} is {span!r:.40}; expected a [start, end) pair of integers")
        start, end = span
        if not 0 <= start < end <= len(text):
            raise _Bad(f"span {i} [{start}, {end}) is not inside the {column.of} text (length {len(text)})")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_images(value, record, column, ctx):
    if not isinstance(value, list):
        raise _Bad(f"expected a list of images, got {_type(value)}; " + IMAGE_VALUE_HELP)
    for i, image in enumerate(value):
        try:
            if not ctx.check_images:
                _check_image_shape(image)
                continue
            resolved = resolve_image(image, ctx.base_dir, ctx.image_root)
            key = repr(resolved) if not isinstance(resolved, bytes) else None
            if key is None or key not in ctx.cache:
                load_media(image, ctx.base_dir, ctx.image_root)
                if key is not None:
                    ctx.cache[key] = None
        except DataError as exc:
            raise _Bad(f"image {i}: {exc.problem}") from None


def _check_image_shape(image: Any) -> None:
    frames = image if is_video(image) else [image]
    if not frames:
        raise DataError("-", "a video (list of frames) has no frames")
    for frame in frames:
        ok = isinstance(frame, (str, bytes, bytearray)) or (
            isinstance(frame, Mapping) and (frame.get("bytes") is not None or frame.get("path") is not None)
        )
        if not ok:
            raise DataError("-", "not an image value; " + IMAGE_VALUE_HELP)


def _check_objects(value, record, column, ctx):
    if not isinstance(value, list):
        raise _Bad(f"expected a list of objects, got {_type(value)}")
    for i, obj in enumerate(value):
        if not isinstance(obj, Mapping) or not isinstance(obj.get("name"), str) or not obj["name"].strip():
            raise _Bad(f"object {i} needs a non-empty 'name' string: {obj!r:.60}")
        if obj.get("color") is not None and not isinstance(obj["color"], str):
            raise _Bad(f"object {i} 'color' is {_type(obj['color'])}, expected a string")
        if obj.get("size") is not None and not (isinstance(obj["size"], str) or _is_number(obj["size"])):
            raise _Bad(f"object {i} 'size' is {_type(obj['size'])}, expected a string or a number")
        if obj.get("count") is not None and not (_is_int(obj["count"]) and obj["count"] >= 0):
            raise _Bad(f"object {i} 'count' is {obj['count']!r}, expected a non-negative integer")
        box = obj.get("bbox")
        if box is not None and not (
            isinstance(box, (list, tuple)) and len(box) == 4 and all(_is_number(x) for x in box)
            and box[0] <= box[2] and box[1] <= box[3]
        ):
            raise _Bad(f"object {i} 'bbox' is {box!r:.60}; expected [x0, y0, x1, y1] with x0 <= x1, y0 <= y1")


def _check_str_list(value, record, column, ctx):
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise _Bad(f"expected a list of strings, got {_type(value)} {value!r:.60}")


def _check_ratings(value, record, column, ctx):
    if not isinstance(value, (list, Mapping)):
        raise _Bad(f"expected a list or a mapping of ratings, got {_type(value)}")


CHECKS = {
    "id": _check_id,
    "str": _check_str,
    "number": _check_number,
    "json": _check_json,
    "images": _check_images,
    "prompt": _check_prompt,
    "completion": _check_completion,
    "conversation": _check_conversation,
    "spans": _check_spans,
    "objects": _check_objects,
    "str_list": _check_str_list,
    "ratings": _check_ratings,
}


# ------------------------------------------------------------------------------------------------ records


def detect_kind(columns: Iterable[str], declared: str | None = None) -> str:
    """The record kind: as declared (dataset.json), else from the columns present."""
    if declared is not None:
        lookup(KINDS, "record kind", declared)
        return declared
    columns = set(columns)
    if {"chosen", "rejected"} <= columns:
        return "preference"
    if "messages" in columns:
        return "sft"
    if "prompt" in columns:
        return "prompt"
    return "source"


def _placeholder_check(record: Mapping, kind: str) -> tuple[str, str] | None:
    """(field, problem) when the image placeholders in the prompt do not match `images`."""
    field = {"preference": "prompt", "prompt": "prompt", "sft": "messages"}.get(kind)
    if field is None:
        return None
    n_image_slots, n_video_slots = count_placeholders(record[field])
    images = record["images"]
    n_videos = sum(1 for x in images if is_video(x))
    n_images = len(images) - n_videos
    if (n_image_slots, n_video_slots) != (n_images, n_videos):
        return field, (
            f"{n_image_slots} image placeholder(s) ({{'type': 'image'}} items or {IMAGE_TOKEN} tokens) and "
            f"{n_video_slots} video placeholder(s) but 'images' holds {n_images} image(s) and {n_videos} video(s)"
        )
    corrupted = record.get("corrupted_images")
    if corrupted is not None and len(corrupted) != len(images):
        return "corrupted_images", f"holds {len(corrupted)} image(s) but 'images' holds {len(images)}"
    return None


def validate_record(
    record: Any,
    kind: str,
    path: object,
    row: int,
    base_dir: str | Path | None = None,
    image_root: str | Path | None = None,
    check_images: bool = True,
    _ctx: _Context | None = None,
) -> None:
    """Raise DataError(path, problem, row, field) for the first way `record` breaks the `kind` contract.

    Images are resolved under `image_root` (else `base_dir`) and, with `check_images`, fully decoded.
    """
    columns = lookup(KINDS, "record kind", kind)
    ctx = _ctx or _Context(_as_path(base_dir), _as_path(image_root), check_images, {})
    if not isinstance(record, Mapping):
        raise DataError(path, f"expected a record (a mapping of column -> value), got {_type(record)}", row=row)
    for name, column in columns.items():
        value = record.get(name)
        if value is None:
            if column.required:
                raise DataError(path, f"missing required column for a {kind} record", row=row, field=name)
            continue
        try:
            CHECKS[column.type](value, record, column, ctx)
        except _Bad as exc:
            raise DataError(path, str(exc), row=row, field=name) from None
    bad = _placeholder_check(record, kind)
    if bad is not None:
        raise DataError(path, bad[1], row=row, field=bad[0])
    if kind == "preference" and completion_text(record["chosen"]) == completion_text(record["rejected"]) \
            and record.get("corrupted_images") is None:
        raise DataError(path, "chosen and rejected are the same text: the pair teaches nothing", row=row,
                        field="rejected")


def validate_records(
    records: Iterable[Any],
    kind: str,
    path: object,
    base_dir: str | Path | None = None,
    image_root: str | Path | None = None,
    check_images: bool = True,
    origins: list[tuple[object, int]] | None = None,
) -> int:
    """Validate every record and the uniqueness of ids; returns the number of records.

    Rows are numbered from 1. `origins[i]` = (file, row) of record i, for datasets spread over shards; it
    defaults to the `origins` of a `Records` list from `read_records`, then to (path, i + 1).
    """
    if origins is None:
        origins = getattr(records, "origins", None)
    if base_dir is None:
        base_dir = getattr(records, "base_dir", None)
    ctx = _Context(_as_path(base_dir), _as_path(image_root), check_images, {})
    first_seen: dict[str, tuple[object, int]] = {}
    n = 0
    for i, record in enumerate(records):
        file, row = origins[i] if origins else (path, i + 1)
        validate_record(record, kind, file, row, _ctx=ctx)
        rid = record["id"]
        if rid in first_seen:
            seen_file, seen_row = first_seen[rid]
            at = f"row {seen_row}" + ("" if str(seen_file) == str(file) else f" of {seen_file}")
            raise DataError(file, f"duplicate id {rid!r} (first at {at}); ids must be unique", row=row, field="id")
        first_seen[rid] = (file, row)
        n += 1
    return n


def _as_path(value: str | Path | None) -> Path | None:
    return None if value is None else Path(value)
