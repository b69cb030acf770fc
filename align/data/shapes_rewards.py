"""Verifiable rewards of the shapes world: a model's answer checked against the world's exact ground truth, for
RL with rule-based rewards (`align grpo`, `align ppo --reward-func`).

Each function has the reward-function signature of TRL and align, `f(prompts, completions, **columns)` with one
entry per completion, and returns one float per completion. A completion is a string or TRL's conversational
form `[{"role": "assistant", "content": ...}]`. Where it holds `<answer>...</answer>` (the R1 / Visual-RFT
format), only the text inside is checked; `answer_format` rewards the format itself.

The columns come from the prompt rows:

| reward | reads | 1.0 when |
|---|---|---|
| `count` | `answer`: the number of objects asked about | the first number (digits or a word, zero..twelve; "no" before a shape is 0) equals it |
| `color` | `answer`: a colour | the first colour word (synonyms included) is it |
| `position` | `answer`: a cell of the 3x3 grid ("top-left", "center", ...) | the first position phrase names that cell |
| `existence` | `answer`: "yes" or "no" | the first yes/no word is it |
| `grounding_iou` | `box`: [x0, y0, x1, y1] in pixels; `image_size`: [w, h]; optional `grounding_format` | (not 0/1) the IoU of the first box written with the true box |
| `answer_format` | nothing | the completion is `<think>...</think>` then `<answer>...</answer>` and nothing else |

A completion that says nothing checkable scores 0: naming every colour, or every count, does not pay, since only
the first is read.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from align.data import shapes_vocab as vocab
from align.data.messages import completion_text

_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_FORMAT = re.compile(r"\s*<think>.*?</think>\s*<answer>.*?</answer>\s*", re.DOTALL | re.IGNORECASE)
_TOKEN = re.compile(r"[a-z]+|\d+")
# Formats tried, in this order, when a row does not name its own: the first that finds a box is read.
# qwen's <box> and minigptv2's {<..>} cannot be mistaken; ferret's integers are tried before shikra's decimals.
_DETECT_ORDER = ("qwen", "minigptv2", "ferret", "shikra")


def answer_text(completion: Any) -> str:
    """The text a reward checks: inside `<answer>...</answer>` when the completion has it, else all of it."""
    text = completion if isinstance(completion, str) else completion_text(completion)
    inside = _ANSWER.search(text)
    return inside.group(1) if inside else text


def _tokens(completion: Any) -> list[str]:
    return _TOKEN.findall(answer_text(completion).lower())


def _column(name: str, values: Sequence | None, n: int) -> Sequence:
    if values is None:
        raise ValueError(f"needs the prompt rows' '{name}' column")
    if len(values) != n:
        raise ValueError(f"got {len(values)} '{name}' values for {n} completions")
    return values


def first_number(completion: Any) -> int | None:
    """The first count the answer states: digits or a number word; "no" right before a shape noun is 0."""
    words = _tokens(completion)
    for i, word in enumerate(words):
        if word.isdigit():
            return int(word)
        if word in vocab.NUMBERS:
            return vocab.NUMBERS[word]
        if word in ("no", "none") and (word == "none" or (i + 1 < len(words) and _is_shape(words[i + 1]))):
            return 0
    return None


def _is_shape(word: str) -> bool:
    return vocab.singularize(word) in vocab.SYNONYMS or word in ("shape", "shapes")


def first_color(completion: Any) -> str | None:
    for word in _tokens(completion):
        word = vocab.COLOR_SYNONYMS.get(word, word)
        if word in vocab.COLORS:
            return word
    return None


def first_position(completion: Any) -> str | None:
    """The cell of the first position phrase (longest phrase first at each word: "top left" is top-left)."""
    found = vocab.position_at(_tokens(completion))
    return found[2] if found else None


def first_yes_no(completion: Any) -> str | None:
    return next((w for w in _tokens(completion) if w in ("yes", "no")), None)


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes (x1, y1 exclusive); 0 for an empty union."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(width, 0.0) * max(height, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def first_box(completion: Any, image_size: Sequence[int], grounding_format: str | None = None):
    """The first box the answer writes, in pixels: in `grounding_format`, or in the first format that finds one."""
    from align.data.grounding import read_boxes

    text = answer_text(completion)
    for fmt in (grounding_format,) if grounding_format else _DETECT_ORDER:
        boxes = read_boxes(text, fmt, tuple(image_size))
        if boxes:
            return boxes[0]
    return None


def _matches(found: list, truths: Sequence, normalise) -> list[float]:
    return [1.0 if f is not None and f == normalise(t) else 0.0 for f, t in zip(found, truths, strict=True)]


def count(prompts: list, completions: list, answer: Sequence | None = None, **_: Any) -> list[float]:
    """1.0 when the first number stated equals the row's `answer` (a count)."""
    truths = _column("answer", answer, len(completions))
    return _matches([first_number(c) for c in completions], truths, int)


def color(prompts: list, completions: list, answer: Sequence | None = None, **_: Any) -> list[float]:
    """1.0 when the first colour named is the row's `answer`."""
    truths = _column("answer", answer, len(completions))
    return _matches([first_color(c) for c in completions], truths,
                    lambda t: vocab.COLOR_SYNONYMS.get(str(t).strip().lower(), str(t).strip().lower()))


def position(prompts: list, completions: list, answer: Sequence | None = None, **_: Any) -> list[float]:
    """1.0 when the first position phrase names the row's `answer` cell."""
    truths = _column("answer", answer, len(completions))
    return _matches([first_position(c) for c in completions], truths, lambda t: str(t).strip().lower())


def existence(prompts: list, completions: list, answer: Sequence | None = None, **_: Any) -> list[float]:
    """1.0 when the first yes/no word is the row's `answer`."""
    truths = _column("answer", answer, len(completions))
    return _matches([first_yes_no(c) for c in completions], truths, lambda t: str(t).strip().lower())


def grounding_iou(prompts: list, completions: list, box: Sequence | None = None,
                  image_size: Sequence | None = None, grounding_format: Sequence | None = None,
                  **_: Any) -> list[float]:
    """The IoU of the first box written with the row's true `box` (0 when none is written)."""
    n = len(completions)
    boxes, sizes = _column("box", box, n), _column("image_size", image_size, n)
    formats = grounding_format if grounding_format is not None else [None] * n
    rewards = []
    for completion, truth, size, fmt in zip(completions, boxes, sizes, formats, strict=True):
        found = first_box(completion, size, fmt)
        rewards.append(0.0 if found is None else box_iou(found, [float(v) for v in truth]))
    return rewards


def answer_format(prompts: list, completions: list, **_: Any) -> list[float]:
    """1.0 for `<think>...</think>` followed by `<answer>...</answer>` and nothing else (R1 / Visual-RFT)."""
    return [1.0 if _FORMAT.fullmatch(c if isinstance(c, str) else completion_text(c)) else 0.0
            for c in completions]


# The prompt-row columns each reward needs on every row (the RL trainers check them before training; an optional
# column such as grounding_iou's `grounding_format` is not listed).
for _reward, _columns in ((count, ("answer",)), (color, ("answer",)), (position, ("answer",)),
                          (existence, ("answer",)), (grounding_iou, ("box", "image_size")), (answer_format, ())):
    _reward.reads = _columns
del _reward, _columns
