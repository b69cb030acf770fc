"""Outside dataset formats, one converter each, turned into records of the data contract (README, Data format).

`FORMATS` maps a format name to how to recognise its columns and how to convert its rows. A reader that sees
rows it does not know asks `detect_format(columns)`; None means the rows are already in the contract.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from align.data.formats.llava import convert_llava, is_llava_format, load_llava


@dataclass(frozen=True)
class Format:
    detect: Callable[[Iterable[str]], bool]  # columns -> whether rows with them are in this format
    convert: Callable[..., list[dict]]  # (rows, path) -> records
    kind: str  # the record kind the conversion makes
    help: str = ""


FORMATS: dict[str, Format] = {
    "llava": Format(is_llava_format, convert_llava, "sft",
                    help="LLaVA/ShareGPT-style JSON: id, image(s) or video, conversations [{from, value}]"),
}


def detect_format(columns: Iterable[str]) -> str | None:
    """The name of the outside format whose columns these are, or None."""
    columns = list(columns)
    for name, fmt in FORMATS.items():
        if fmt.detect(columns):
            return name
    return None


__all__ = ["FORMATS", "Format", "convert_llava", "detect_format", "is_llava_format", "load_llava"]
