"""The shapes world's exact claim checker: a yes/no question about one image answered from its ground-truth
objects. It stands in for RLAIF-V's labeler VLM (`align build-pairs rlaifv labeler=align.data.shapes_claims:labeler`)
and HSA-DPO's severity judge (`judge=align.data.shapes_claims:severity`) where the truth is known, so a
builder's pairs can be checked without a model; `caption_judge` scores a response against an exact caption.

A question names shapes (a class or its synonym, singular or plural), each with optional count, size, colour
and position words ("Is there a medium red circle at the bottom?", "Are there two squares?", "Is it true that
the image shows three shapes ...?"). Every named shape must hold for a yes: an object of that class with the
colour, size and position given (a count must equal the number of such objects); "shapes" with a number counts
all objects; "no" or "not" before a shape asks for its absence. A question that names nothing it can check is a
ValueError, never a silent no.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from align.data import shapes_vocab as vocab

_WORD = re.compile(r"[a-z]+")
_NUMBERS = vocab.NUMBERS | {"a": 1, "an": 1, "single": 1}


def _position_after(words: list[str], start: int) -> str | None:
    """The cell named by the first position phrase from word `start` on."""
    found = vocab.position_at(words, start)
    return found[2] if found else None


def answer(question: str, objects: Sequence[Mapping[str, Any]]) -> bool:
    """Whether every shape the question names holds in `objects` (see the module docstring)."""
    words = _WORD.findall(question.lower().replace("please answer yes or no", ""))
    checks: list[bool] = []
    i = 0
    while i < len(words):
        two = " ".join(words[i:i + 2])
        if two in vocab.PHRASES:
            name, width = vocab.PHRASES[two], 2
        else:
            singular = vocab.singularize(words[i])
            name, width = vocab.SYNONYMS.get(singular), 1
        if name is None and words[i] in ("shape", "shapes") and i > 0 and words[i - 1] in _NUMBERS:
            checks.append(len(objects) == _NUMBERS[words[i - 1]])
        if name is None:
            i += 1
            continue
        before = words[max(0, i - 4):i]
        color = next((w for w in before if w in vocab.COLORS), None)
        size = next((w for w in before if w in vocab.SIZES), None)
        count = next((_NUMBERS[w] for w in reversed(before) if w in _NUMBERS), None)
        negated = any(w in ("no", "not") for w in before)
        cell = _position_after(words, i + width)
        matching = [o for o in objects if o.get("name") == name and (color is None or o.get("color") == color)
                    and (size is None or o.get("size") == size) and (cell is None or o.get("cell") == cell)]
        holds = len(matching) == count if count is not None and count != 1 else bool(matching)
        checks.append(not holds if negated else holds)
        i += width
    if not checks:
        raise ValueError(f"the question names no shape or shape count to check: {question!r}")
    return all(checks)


def labeler(question: str, source: Mapping[str, Any]) -> bool:
    """`answer` on the source row's `objects` (the signature of an rlaifv labeler callable)."""
    objects = source.get("objects")
    if not isinstance(objects, list):
        raise ValueError("the source row has no objects to check the question against")
    return answer(question, objects)


def severity(sentence: str, source: Mapping[str, Any], question: str = "") -> str:
    """An exact `hsa` judge for the shapes world: "high" for a sentence whose claim is false for the image's
    objects, "none" for one that holds or names nothing checkable."""
    from align.data.claims import yes_no_question

    try:
        holds = labeler(yes_no_question(sentence), source)
    except ValueError:
        return "none"
    return "none" if holds else "high"


def caption_judge(response: str, caption: str, question: str = "") -> float:
    """A `hound` judge for the shapes world, where captions are exact: 1 + 4 x the share of the response's
    sentences that the caption holds word for word (5: every sentence true, 1: none)."""
    sentences = [s.strip().rstrip(".") for s in re.split(r"(?<=[.!?])\s+", response.strip()) if s.strip()]
    return 1 + 4 * sum(s in caption for s in sentences) / max(len(sentences), 1)
