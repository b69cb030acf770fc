"""LLaVA-style conversation files -> SFT records (`id`, `images`, `messages`).

The input is a JSON list (or JSONL) of rows like LLaVA's `llava_v1_5_mix665k.json`:

    {"id": "000000033471", "image": "coco/train2017/000000033471.jpg",
     "conversations": [{"from": "human", "value": "<image>\\nWhat are the colors of the bus?"},
                       {"from": "gpt", "value": "The bus is white and red."}]}

Conventions:
- Roles: "human"/"user" -> user, "gpt"/"assistant" -> assistant (LLaVA and the ShareGPT-like variant), "system"
  -> system, allowed only as the first turn. After it, turns alternate user, assistant, ..., ending with an
  assistant turn; anything else is an error naming the turn.
- Images: `image` is one path or a list of paths (multi-image rows), relative to the file's folder or the image
  root; no `image` key means a text-only row. Each `<image>` token in a user turn becomes an `{"type": "image"}`
  item at its position in the content list, the text around it kept as text items. The one newline right after
  a token is dropped: LLaVA's preprocessing writes "<image>\\n" + text, and chat templates (LLaVA-1.5's, ours)
  write that newline after every image item themselves, so keeping it would double it. Unlike LLaVA-1.5's
  `preprocess_multimodal`, a token is not moved to the front of its turn: positions matter for multi-image rows.
  The number of `<image>` tokens must equal the number of images; tokens in system or assistant turns are errors.
- Videos: `video` is one video, either a list of frame paths or a folder of frames (its image files, sorted
  by name with numbers compared as numbers, so frame_2 comes before frame_10). It becomes one entry of
  `images` (a list of frames, the data contract's video) and one `{"type": "video"}` item where its token
  stands: `<video>` (Video-LLaVA), or `<image>` in a row without an `image` key (LLaVA-NeXT-Video data marks
  the video that way). Video files (.mp4, ...) are not decoded here: extract their frames into a folder first.
- Ids: the row's `id` as a string, else its row number, so re-converting a file gives the same ids.
- Only `id`, `images` and `messages` are kept; other keys of a row are dropped.

Errors are DataErrors naming the file, the row and the field (`conversations[2].from`, `image`, ...).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from align.data.io import Records, read_records
from align.data.messages import IMAGE_TOKEN
from align.errors import DataError

VIDEO_TOKEN = "<video>"
# Where each "from" value goes; LLaVA writes human/gpt, ShareGPT-like data user/assistant.
ROLE_MAP: dict[str, str] = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
VIDEO_FILE_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".flv", ".m4v", ".mpeg", ".mpg")
# A placeholder token and the one newline LLaVA writes after it.
_PLACEHOLDER = re.compile("(" + re.escape(IMAGE_TOKEN) + "|" + re.escape(VIDEO_TOKEN) + ")\n?")
_DIGITS = re.compile(r"(\d+)")


def is_llava_format(columns: Iterable[str]) -> bool:
    """Whether rows with these columns are LLaVA-style conversations (a `conversations` column)."""
    return "conversations" in set(columns)


class _Where:
    """File and row of the row being converted; `fail` makes the DataError."""

    def __init__(self, path: object, row: int):
        self.path, self.row = path, row

    def fail(self, problem: str, field: str | None = None) -> DataError:
        return DataError(self.path, problem, row=self.row, field=field)


# ------------------------------------------------------------------------------------------------ turns


def _turns(conversations: Any, where: _Where) -> list[tuple[str, str]]:
    """(role, value) per turn, with roles mapped; a bad turn is an error naming it."""
    if not isinstance(conversations, list) or not conversations:
        raise where.fail("expected a non-empty list of turns ({'from', 'value'})", "conversations")
    turns = []
    for i, turn in enumerate(conversations):
        field = f"conversations[{i}]"
        if not isinstance(turn, Mapping):
            raise where.fail(f"expected a turn {{'from', 'value'}}, got {type(turn).__name__}", field)
        source = turn.get("from")
        if source not in ROLE_MAP:
            known = ", ".join(ROLE_MAP)
            raise where.fail(f"unknown role {source!r}; expected one of {known}", field + ".from")
        value = turn.get("value")
        if not isinstance(value, str):
            raise where.fail(f"expected a string, got {type(value).__name__}", field + ".value")
        if not value.strip():
            raise where.fail(f"empty {source!r} turn", field + ".value")
        turns.append((ROLE_MAP[source], value))
    return turns


def _a(role: str) -> str:
    return {"assistant": "an assistant"}.get(role, "a " + role)


def _check_order(turns: list[tuple[str, str]], where: _Where) -> None:
    """An optional first system turn, then user, assistant, user, ..., ending with an assistant turn."""
    expected = "user"
    for i, (role, _) in enumerate(turns):
        field = f"conversations[{i}].from"
        if role == "system":
            if i != 0:
                raise where.fail("a system turn is only allowed as the first turn", field)
            continue
        if role != expected:
            raise where.fail(f"turn {i} is {_a(role)} turn where {_a(expected)} turn was expected; turns "
                             "must alternate user, assistant", field)
        expected = "assistant" if expected == "user" else "user"
    if expected == "user" and all(role == "system" for role, _ in turns):
        raise where.fail("no user or assistant turn", "conversations")
    if expected == "assistant":
        raise where.fail("the conversation ends with a user turn that has no assistant reply",
                         f"conversations[{len(turns) - 1}]")


# ------------------------------------------------------------------------------------------------ media


def _image_list(value: Any, where: _Where) -> list[str]:
    if value is None:
        return []
    paths = [value] if isinstance(value, str) else value
    if not isinstance(paths, list) or not all(isinstance(p, str) and p.strip() for p in paths):
        raise where.fail(f"expected an image path or a list of image paths, got {value!r:.80}", "image")
    return list(paths)


def _natural_key(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in _DIGITS.split(name)]


def frames_in_folder(folder: str, root: Path | None, where: _Where) -> list[str]:
    """The frame files in `folder` (relative to `root`), as paths relative to the same root."""
    if folder.lower().endswith(VIDEO_FILE_SUFFIXES):
        raise where.fail(f"'{folder}' is a video file; video files are not decoded here: extract its frames "
                         "into a folder (one image per frame) and point 'video' at the folder", "video")
    if root is None:
        raise where.fail(f"video folder '{folder}' has no folder to resolve under; pass an image root", "video")
    real_root = Path(os.path.realpath(root))
    real = Path(os.path.realpath(Path(root) / folder))
    if not real.is_relative_to(real_root):
        raise where.fail(f"video folder '{folder}' resolves outside its root '{root}'", "video")
    if not real.is_dir():
        raise where.fail(f"video folder '{folder}' not found under '{root}'", "video")
    names = sorted((p.name for p in real.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES),
                   key=_natural_key)
    if not names:
        raise where.fail(f"video folder '{folder}' holds no frames ({', '.join(FRAME_SUFFIXES)} files)", "video")
    prefix = folder.rstrip("/\\")
    return [f"{prefix}/{name}" for name in names]


def _video_list(value: Any, root: Path | None, where: _Where) -> list[list[str]]:
    """The row's videos (zero or one), each a list of frame paths."""
    if value is None:
        return []
    if isinstance(value, str) and value.strip():
        return [frames_in_folder(value, root, where)]
    if isinstance(value, list) and value and all(isinstance(p, str) and p.strip() for p in value):
        return [list(value)]
    raise where.fail(f"expected a folder of frames or a non-empty list of frame paths, got {value!r:.80}", "video")


# ------------------------------------------------------------------------------------------------ content


def _content(value: str, kinds: Mapping[str, str]) -> list[dict[str, Any]]:
    """Text with placeholder tokens -> text items and media items, in order."""
    items: list[dict[str, Any]] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(value):
        if match.start() > pos:
            items.append({"type": "text", "text": value[pos:match.start()]})
        items.append({"type": kinds[match.group(1)]})
        pos = match.end()
    if pos < len(value):
        items.append({"type": "text", "text": value[pos:]})
    return items


def _token_kinds(turns: list[tuple[str, str]], images: list, videos: list) -> dict[str, str]:
    """Which item each token makes; `<image>` marks the video in a video row without images (LLaVA-NeXT-Video)."""
    if videos and not images and not any(VIDEO_TOKEN in value for _, value in turns):
        return {IMAGE_TOKEN: "video", VIDEO_TOKEN: "video"}
    return {IMAGE_TOKEN: "image", VIDEO_TOKEN: "video"}


def _check_counts(turns, kinds, images: list, videos: list, where: _Where) -> None:
    for i, (role, value) in enumerate(turns):
        if role != "user" and _PLACEHOLDER.search(value):
            raise where.fail(f"an {IMAGE_TOKEN} or {VIDEO_TOKEN} token in {_a(role)} turn; images and videos "
                             "belong to user turns", f"conversations[{i}].value")
    counts = {"image": 0, "video": 0}
    for _, value in turns:
        for match in _PLACEHOLDER.finditer(value):
            counts[kinds[match.group(1)]] += 1
    if counts["image"] != len(images):
        raise where.fail(f"{counts['image']} {IMAGE_TOKEN} token(s) in the conversation but {len(images)} "
                         "image(s)", "image")
    if counts["video"] != len(videos):
        token = f"{VIDEO_TOKEN} (or {IMAGE_TOKEN})" if kinds[IMAGE_TOKEN] == "video" else VIDEO_TOKEN
        raise where.fail(f"{counts['video']} {token} token(s) for videos in the conversation but "
                         f"{len(videos)} video(s)", "video")


def _messages_and_media(turns, kinds, images: list, videos: list) -> tuple[list[dict], list]:
    """Messages, and the images/videos in the order their items appear (the order `images` must have)."""
    pending = {"image": iter(images), "video": iter(videos)}
    messages, media = [], []
    for role, value in turns:
        content = _content(value, kinds) if role == "user" else [{"type": "text", "text": value}]
        media += [next(pending[item["type"]]) for item in content if item["type"] != "text"]
        messages.append({"role": role, "content": content})
    return messages, media


# ------------------------------------------------------------------------------------------------ rows


def convert_llava_row(row: Any, row_number: int, path: object = "LLaVA data", root: Path | None = None) -> dict:
    """One LLaVA row -> one SFT record; `root` is where a video folder is looked up."""
    where = _Where(path, row_number)
    if not isinstance(row, Mapping):
        raise where.fail(f"expected a JSON object, got {type(row).__name__}")
    turns = _turns(row.get("conversations"), where)
    _check_order(turns, where)
    images = _image_list(row.get("image"), where)
    videos = _video_list(row.get("video"), root, where)
    kinds = _token_kinds(turns, images, videos)
    _check_counts(turns, kinds, images, videos, where)
    messages, media = _messages_and_media(turns, kinds, images, videos)
    rid = row.get("id")
    return {
        "id": str(row_number) if rid is None or str(rid).strip() == "" else str(rid),
        "images": media,
        "messages": messages,
    }


def _root(records: Any, path: object, image_root: str | Path | None) -> Path | None:
    for candidate in (image_root, getattr(records, "image_root", None), getattr(records, "base_dir", None)):
        if candidate is not None:
            return Path(candidate)
    if isinstance(path, (str, Path)) and Path(path).exists():
        return Path(path) if Path(path).is_dir() else Path(path).parent
    return None


def convert_llava(records: Iterable[Any], path: object = None, image_root: str | Path | None = None) -> Records:
    """LLaVA rows -> SFT records, in order; the result keeps the input's origins, base_dir and image_root.

    `records` is usually what `read_records` gave for a LLaVA JSON/JSONL file (row numbers in errors come from
    its origins, else count from 1); `path` names the file in errors. Video folders are listed under
    `image_root`, else the input's image root or folder, else the folder of `path`.
    """
    path = path if path is not None else getattr(records, "path", None) or "LLaVA data"
    origins = getattr(records, "origins", None)
    root = _root(records, path, image_root)
    out = []
    for i, row in enumerate(records):
        file, number = origins[i] if origins else (path, i + 1)
        out.append(convert_llava_row(row, number, file, root))
    return Records(
        out,
        path=getattr(records, "path", None) or path,
        base_dir=getattr(records, "base_dir", None) if isinstance(records, Records) else root,
        image_root=image_root if image_root is not None else getattr(records, "image_root", None),
        info=getattr(records, "info", None),
        origins=origins,
        kind="sft",
    )


def load_llava(path: str | Path, image_root: str | Path | None = None) -> Records:
    """Read a LLaVA JSON/JSONL file and convert it (not yet validated: see `validate_records`)."""
    return convert_llava(read_records(path, image_root=image_root), path, image_root)
