"""Chat messages in records: `{"role": str, "content": str | list of items}`.

An item is `{"type": "text", "text": str}`, `{"type": "image"}` or `{"type": "video"}` (extra keys allowed).
Image items, and literal `<image>` tokens in text (as LLaVA data has), mark where each entry of `images` goes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

IMAGE_TOKEN = "<image>"
ROLES = ("system", "user", "assistant")


def _type(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def message_text(message: Mapping) -> str:
    """The text of one message: string content as is; the text items of list content joined with ''."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    return "".join(item.get("text") or "" for item in content or [] if item.get("type") == "text")


def completion_text(messages: list[Mapping]) -> str:
    """The completion text of a `chosen`/`rejected` value; spans are character offsets into this string."""
    return "".join(message_text(m) for m in messages if m.get("role") == "assistant")


def count_placeholders(messages: Iterable[Mapping]) -> tuple[int, int]:
    """(image placeholders, video placeholders): image/video items plus `<image>` tokens in text."""
    n_images = n_videos = 0
    for message in messages:
        content = message.get("content")
        items = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        for item in items:
            kind = item.get("type")
            n_images += kind == "image"
            n_videos += kind == "video"
            if kind == "text" and isinstance(item.get("text"), str):
                n_images += item["text"].count(IMAGE_TOKEN)
    return n_images, n_videos


def message_problem(value: Any, roles: tuple[str, ...] = ROLES) -> str | None:
    """What is wrong with a list of messages, or None when nothing is."""
    if not isinstance(value, list) or not value:
        return f"expected a non-empty list of messages ({{'role', 'content'}}), got {_type(value)}"
    for i, message in enumerate(value):
        if not isinstance(message, Mapping):
            return f"message {i} is {_type(message)}, expected a mapping with 'role' and 'content'"
        for key in ("role", "content"):
            if key not in message:
                return f"message {i} has no '{key}'"
        if message["role"] not in roles:
            return f"message {i} has role {message['role']!r}; expected one of {', '.join(roles)}"
        content = message["content"]
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            return f"message {i} content is {_type(content)}; expected a string or a list of items"
        for j, item in enumerate(content):
            kind = item.get("type") if isinstance(item, Mapping) else None
            if kind == "text" and not isinstance(item.get("text"), str):
                return f"message {i} item {j} is a text item without a 'text' string"
            if kind not in ("text", "image", "video"):
                return f"message {i} item {j} is not {{'type': 'text'|'image'|'video', ...}}: {item!r:.80}"
    return None
