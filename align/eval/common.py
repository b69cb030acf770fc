"""What every benchmark module shares: the result type, reading answer and question files, aligning them by id.

A benchmark module (align/eval/pope.py, chair.py, ...) holds pure functions over answers and ground truth, plus
one entry point registered in `align.eval.BENCHMARKS`:

    evaluate(answers: str | Path, questions: str | Path | None = None, **options) -> EvalResult

`answers` is a JSONL/JSON file of model outputs keyed by an id (`question_id` by default; captioning benchmarks
also accept `image_id`), `questions` the benchmark's own file (questions with labels, or annotations); `options`
are the benchmark's settings (strings from the command line's key=value are coerced by the module). Errors about
the files are `DataError`s naming the file, row and id, raised before any metric is computed.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from align.errors import DataError
from align.files import utf8_text


@dataclass
class EvalResult:
    """A benchmark's figures: `metrics` the headline numbers (flat, what the table and `compare` show), `groups`
    the same per split/category/subtask, `counts` how many items went into them, `notes` caveats to print (e.g.
    "ObjHal-rule: objects extracted by rules, not GPT")."""

    benchmark: str
    metrics: dict[str, float]
    groups: dict[str, dict[str, float]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"benchmark": self.benchmark, "metrics": self.metrics, "groups": self.groups, "counts": self.counts,
                "notes": self.notes}


def read_rows(path: str | Path) -> list[tuple[int, dict]]:
    """(1-based row number, row) of a JSONL file or a JSON list; a row that is not a JSON object is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such file")
    text = utf8_text(path)
    rows: list[tuple[int, Any]]
    loaded = None
    if path.suffix == ".json":
        try:
            loaded = json.loads(text)
        except json.JSONDecodeError as exc:
            if exc.msg != "Extra data":  # POPE ships JSON Lines named .json: read those as lines below
                raise DataError(path, f"not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if loaded is not None:
        if isinstance(loaded, dict):  # {"id": row} maps, as some benchmarks ship them
            loaded = [dict(value, **({"id": key} if "id" not in value else {})) if isinstance(value, dict)
                      else value for key, value in loaded.items()]
        if not isinstance(loaded, list):
            raise DataError(path, "a JSON file must hold a list of objects")
        rows = list(enumerate(loaded, start=1))
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append((number, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(path, f"not valid JSON ({exc.msg})", row=number) from None
    for number, row in rows:
        if not isinstance(row, dict):
            raise DataError(path, f"expected a JSON object, got {type(row).__name__}", row=number)
    return rows


def index_by_id(path: str | Path, rows: Sequence[tuple[int, dict]], id_fields: Sequence[str]) -> dict[Any, dict]:
    """{id: row} using the first of `id_fields` each row has; a missing or repeated id is a DataError naming it."""
    out: dict[Any, dict] = {}
    for number, row in rows:
        key = next((name for name in id_fields if name in row), None)
        if key is None:
            raise DataError(path, f"no id: expected one of {', '.join(id_fields)}", row=number)
        value = row[key]
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise DataError(path, f"{key} must be a string or a number, got {type(value).__name__} {value!r}",
                            row=number, field=key)
        if value in out:
            raise DataError(path, f"{key} {value!r} appears twice", row=number, field=key)
        out[value] = row
    return out


@dataclass
class IdIndex:
    """A file's rows by id, and each row's 1-based line (for errors): `rows[key]`, `line(row)`."""

    path: Path
    rows: dict[Any, dict]
    lines: dict[int, int]

    def line(self, row: dict) -> int:
        return self.lines[id(row)]


def load_indexed(path: str | Path, id_fields: Sequence[str]) -> IdIndex:
    """`read_rows` + `index_by_id`, keeping each row's line number."""
    path = Path(path)
    rows = read_rows(path)
    return IdIndex(path, index_by_id(path, rows, id_fields), {id(row): number for number, row in rows})


def answer_text(path: str | Path, number: int, row: dict, fields: Iterable[str] = ("text", "answer", "caption",
                                                                                      "response", "output")) -> str:
    """The answer string of a row: the first of `fields` present; anything else is a DataError."""
    for name in fields:
        if name in row:
            value = row[name]
            if not isinstance(value, str):
                raise DataError(path, f"the answer must be a string, got {type(value).__name__}", row=number,
                                field=name)
            return value
    raise DataError(path, f"no answer: expected one of {', '.join(fields)}", row=number)


def align_answers(answers_path: str | Path, answers: dict[Any, dict], questions_path: str | Path,
                  questions: dict[Any, dict], allow_extra: bool = False) -> list[Any]:
    """The ids to score, in the questions' order: every question needs an answer (else a DataError naming the
    first missing id and how many are missing); answers to unknown ids are an error unless `allow_extra`."""
    missing = [key for key in questions if key not in answers]
    if missing:
        as_text = {str(key): key for key in answers}
        twin = as_text.get(str(missing[0]))
        kind = {str: "text", int: "a number", float: "a number"}
        hint = f"; the answers write it {twin!r} ({kind.get(type(twin), type(twin).__name__)}), the questions " \
               f"{missing[0]!r} ({kind.get(type(missing[0]), type(missing[0]).__name__)}): write the ids the same " \
               "way" if twin is not None else ""
        raise DataError(answers_path, f"no answer for id {missing[0]!r} of {questions_path} ({len(missing)} of "
                        f"{len(questions)} questions unanswered){hint}")
    if not allow_extra:
        extra = [key for key in answers if key not in questions]
        if extra:
            raise DataError(answers_path, f"id {extra[0]!r} is not a question of {questions_path} ({len(extra)} "
                            "such answers)")
    return list(questions)


def safe_div(numerator: float, denominator: float) -> float:
    """numerator / denominator, 0.0 when the denominator is 0 (an always-"no" answerer has no positives)."""
    return numerator / denominator if denominator else 0.0


def coerce_options(options: dict[str, Any], defaults: dict[str, Any], benchmark: str) -> dict[str, Any]:
    """Command-line option strings coerced to the types of `defaults`; unknown names are a ConfigError listing the
    known ones."""
    from align.errors import ConfigError

    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise ConfigError(f"{benchmark} has no option {', '.join(map(repr, unknown))}; options: "
                          f"{', '.join(sorted(defaults)) or 'none'}")
    out = dict(defaults)
    for name, value in options.items():
        default = defaults[name]
        if isinstance(value, str) and default is not None and not isinstance(default, str):
            try:
                if isinstance(default, bool):
                    if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError(value)
                    value = value.lower() in ("true", "1", "yes")
                elif isinstance(default, int):
                    value = int(value)
                elif isinstance(default, float):
                    value = float(value)
            except ValueError:
                raise ConfigError(f"{benchmark} option {name} expects {type(default).__name__}, got {value!r}") \
                    from None
        out[name] = value
    return out
