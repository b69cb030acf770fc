"""MME hallucination subset ("MME-Hall"): existence, count, position and color, scored as MME's own
`eval_tool/calculation.py` does (docs/benchmarks.md, MME).

Each subtask asks two questions per image, one whose answer is yes and one whose answer is no, so an answerer
that always says "yes" gets half the questions right and no image right: acc 50, acc+ 0, score 50. acc+ is what
rewards a model for telling the two questions apart.

Questions file: JSONL rows {question_id, image, text, label: "yes"|"no", subtask}; answers file: rows
{question_id, text}. Figures are in percent (acc, acc+) and points (score = acc + acc+, at most 200 per subtask,
800 for the total over the four subtasks).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.errors import ConfigError, DataError
from align.eval.common import (
    EvalResult,
    align_answers,
    answer_text,
    coerce_options,
    load_indexed,
    safe_div,
)

BENCHMARK = "mme"
SUBTASKS: tuple[str, ...] = ("existence", "count", "position", "color")
ID_FIELDS: tuple[str, ...] = ("question_id", "id")
LABELS: tuple[str, ...] = ("yes", "no")
# MME pairs the questions of an image: one "yes", one "no"; acc+ asks for both right.
QUESTIONS_PER_IMAGE = 2


def parse_answer(text: str) -> str:
    """"yes", "no" or "other", MME's rule: lower-case; an exact "yes"/"no" is itself; otherwise the first four
    characters decide, "yes" before "no" ("yes." -> yes, "not sure" -> no, "nope" -> no, "i think yes" ->
    other). Nothing is stripped first: MME reads answers from tab-separated lines that hold them as written, so
    "   no" (three spaces) reads "other" as it does there. "other" is scored as wrong."""
    text = text.lower()
    if text in LABELS:
        return text
    prefix = text[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


@dataclass(frozen=True)
class Item:
    """One scored question: the image it belongs to, its label and the parsed answer."""

    image: Any
    label: str
    prediction: str

    @property
    def correct(self) -> bool:
        return self.label == self.prediction


def subtask_metrics(items: Sequence[Item]) -> dict[str, float]:
    """acc and acc+ in percent and score = acc + acc+ for one subtask's items.

    acc = right answers / questions; acc+ = images whose every question is right / images. Images are told apart
    by `Item.image` (MME groups consecutive line pairs; grouping by image gives the same pairs when the file
    holds each image's two questions, which `evaluate` checks)."""
    by_image: dict[Any, list[bool]] = {}
    for item in items:
        by_image.setdefault(item.image, []).append(item.correct)
    acc = 100.0 * safe_div(sum(item.correct for item in items), len(items))
    acc_plus = 100.0 * safe_div(sum(all(marks) for marks in by_image.values()), len(by_image))
    return {"acc": acc, "acc_plus": acc_plus, "score": acc + acc_plus}


def score(items_by_subtask: dict[str, Sequence[Item]]) -> EvalResult:
    """The EvalResult of parsed items grouped by subtask: metrics hold each subtask's score and their total."""
    groups = {name: subtask_metrics(items) for name, items in items_by_subtask.items()}
    metrics = {name: groups[name]["score"] for name in groups}
    metrics["total"] = sum(metrics.values())
    counts = {"questions": sum(len(items) for items in items_by_subtask.values()),
              "images": sum(len({item.image for item in items}) for items in items_by_subtask.values()),
              "other_answers": sum(item.prediction == "other" for items in items_by_subtask.values()
                                   for item in items)}
    notes = []
    absent = [name for name in SUBTASKS if name not in items_by_subtask]
    if absent:
        notes.append(f"total covers {len(items_by_subtask)} of the 4 MME-Hall subtasks (no {', '.join(absent)} "
                     f"questions): its maximum is {200 * len(items_by_subtask)}, not 800")
    return EvalResult(BENCHMARK, metrics, groups, counts, notes)


def evaluate(answers: str | Path, questions: str | Path | None = None, **options: Any) -> EvalResult:
    """Score an answers file against MME-Hall questions (see the module docstring for both formats).

    Every question needs an answer; a missing or repeated id, a label other than yes/no, a subtask outside
    existence/count/position/color, or an image without exactly one yes and one no question of its subtask is a
    DataError naming the id. MME-Hall has no options (any key=value is a ConfigError)."""
    coerce_options(options, {}, BENCHMARK)
    if questions is None:
        raise ConfigError("mme needs --questions: the MME-Hall questions file (question_id, image, text, label, "
                          "subtask)")
    questions_index, answers_index = load_indexed(questions, ID_FIELDS), load_indexed(answers, ID_FIELDS)
    questions_path, by_question, numbers = questions_index.path, questions_index.rows, questions_index.lines
    answers_path, by_answer, answer_numbers = answers_index.path, answers_index.rows, answers_index.lines

    parsed: dict[Any, tuple[str, Any, str]] = {}  # id -> (subtask, image, label)
    pairs: dict[tuple[str, Any], list[tuple[Any, str]]] = {}
    for key, row in by_question.items():
        number = numbers[id(row)]
        subtask = _field(questions_path, number, key, row, "subtask")
        label = _field(questions_path, number, key, row, "label")
        if subtask not in SUBTASKS:
            raise DataError(questions_path, f"question {key!r} has subtask {row['subtask']!r}; MME-Hall's are "
                            f"{', '.join(SUBTASKS)}", row=number, field="subtask")
        if label not in LABELS:
            raise DataError(questions_path, f"question {key!r} has label {row['label']!r}; expected yes or no",
                            row=number, field="label")
        if "image" not in row:
            raise DataError(questions_path, f"question {key!r} has no image (acc+ pairs questions by image)",
                            row=number, field="image")
        parsed[key] = (subtask, _hashable(row["image"]), label)
        pairs.setdefault((subtask, parsed[key][1]), []).append((key, label))
    _check_pairs(questions_path, pairs)

    items: dict[str, list[Item]] = {}
    for key in align_answers(answers_path, by_answer, questions_path, by_question):
        answer = by_answer[key]
        subtask, image, label = parsed[key]
        text = answer_text(answers_path, answer_numbers[id(answer)], answer)
        items.setdefault(subtask, []).append(Item(image, label, parse_answer(text)))
    return score({name: items[name] for name in SUBTASKS if name in items})


def _field(path: Path, number: int, key: Any, row: dict, name: str) -> str:
    """A required string field, lower-cased and stripped (MME lower-cases its labels too)."""
    if name not in row:
        raise DataError(path, f"question {key!r} has no {name}", row=number, field=name)
    value = row[name]
    if not isinstance(value, str):
        raise DataError(path, f"question {key!r}: {name} must be a string, got {type(value).__name__}", row=number,
                        field=name)
    return value.strip().lower()


def _hashable(value: Any) -> Any:
    """Image ids are usually strings; a list/dict image (several paths) is keyed by its JSON-ish repr."""
    return value if isinstance(value, (str, int, float)) else repr(value)


def _check_pairs(path: Path, labels: dict[tuple[str, Any], list[tuple[Any, str]]]) -> None:
    """acc+ is defined on pairs: every (subtask, image) must hold one yes and one no question, as MME's files do
    (its scorer asserts two lines per image)."""
    for (subtask, image), entries in labels.items():
        if len(entries) != QUESTIONS_PER_IMAGE or sorted(label for _, label in entries) != ["no", "yes"]:
            ids = ", ".join(repr(key) for key, _ in entries)
            found = ", ".join(label for _, label in entries)
            raise DataError(path, f"{subtask} image {image!r} has questions {ids} labelled {found}; MME-Hall pairs "
                            "one yes and one no question per image")


def items_from(records: Iterable[tuple[str, Any, str, str]]) -> dict[str, list[Item]]:
    """(subtask, image, label, raw answer) tuples -> items by subtask, parsing each answer; for callers that hold
    their questions in memory (e.g. the shapes-world probes)."""
    out: dict[str, list[Item]] = {}
    for subtask, image, label, text in records:
        out.setdefault(subtask, []).append(Item(image, label, parse_answer(text)))
    return out
