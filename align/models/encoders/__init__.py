"""Family-specific encoders: chat messages + images -> model inputs, where `processor(text=..., images=...)` with
the chat-template text does not place the images right.

Each module holds one family's encoder with the signature of `align.models.inputs.default_encode`; the ENCODERS
dict in align/models/inputs.py maps the family name to it.
"""

from __future__ import annotations

from typing import Any

from align.errors import DataError


def one_image_each(images: list[list[Any]], family: str, videos: list[list[Any]] | None = None) -> list[Any]:
    """[B] images, one per example, for processors that condition every example on exactly one image."""
    if videos and any(videos):
        raise DataError("batch", f"{family} takes no videos; convert the clip to frames or drop it")
    for i, per_example in enumerate(images):
        if len(per_example) != 1:
            raise DataError("batch", f"{family} needs exactly one image per example, got {len(per_example)}", row=i)
    return [per_example[0] for per_example in images]
