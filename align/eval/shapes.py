"""Shapes-world benchmarks (docs/benchmarks.md, The shapes world): ShapesPOPE, the probes, and ShapesCHAIR (in shapes_chair.py).

The point of the shapes world is that its numbers mean the same as the real benchmarks' numbers, so nothing here
re-implements a formula: yes/no answers go through align.eval.pope's reference parser, strict parser and metrics,
and captions through align.eval.chair's extraction (the mapping in docs/benchmarks.md). What this module adds is the shapes-world data:
question files whose rows carry `category`/`probe`, the optional likelihood scoring a tiny model needs, and the
AMBER and MME views of the probes.

Yes/no scoring (`scoring` option):
  - "text": the answer text through POPE's reference parser (headline numbers) and the strict parser (the
    `unknown_rate`, the share of answers that are neither a clear yes nor a clear no);
  - "likelihood": yes iff yes_logprob > no_logprob (a tie is "no"), for models too small to answer in words;
    align.eval.runner's likelihood mode writes these fields;
  - "auto" (default): "likelihood" when every answer row has both log-probabilities, else "text".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.errors import ConfigError, DataError
from align.eval.amber import EXISTENCE_F1_EPS as AMBER_EXISTENCE_EPS
from align.eval.amber import F1_EPS as AMBER_EPS
from align.eval.amber import discriminative_metrics as amber_metrics
from align.eval.amber import parse_answer as amber_parse
from align.eval.common import (
    EvalResult,
    align_answers,
    answer_text,
    coerce_options,
    index_by_id,
    read_rows,
    safe_div,
)
from align.eval.mme import Item as MMEItem
from align.eval.mme import parse_answer as mme_parse
from align.eval.mme import subtask_metrics as mme_metrics
from align.eval.pope import parse_reference, parse_strict, pope_metrics
from align.eval.shapes_chair import evaluate_chair

__all__ = ["YesNo", "evaluate_chair", "evaluate_pope", "evaluate_probes", "yes_no_decisions"]

SCORING_MODES = ("auto", "text", "likelihood")
YES_NO_OPTIONS: dict[str, Any] = {"scoring": "auto", "allow_extra": False}
QUESTION_IDS = ("question_id",)
LOGPROB_FIELDS = ("yes_logprob", "no_logprob")
METRIC_NAMES = ("accuracy", "precision", "recall", "f1", "yes_ratio")


# ------------------------------------------------------------------------------------------ answers


def _label(path: Path, number: int, row: dict, key: Any) -> str:
    label = row.get("label")
    if not isinstance(label, str) or label.strip().lower() not in ("yes", "no"):
        raise DataError(path, f"question {key!r}: label must be 'yes' or 'no', got {label!r}", row=number,
                        field="label")
    return label.strip().lower()


def _logprob(path: Path, number: int, row: dict, name: str) -> float:
    value = row.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise DataError(path, f"{name} must be a number, got {value!r}", row=number, field=name)
    return float(value)


@dataclass
class YesNo:
    """Answers to yes/no questions, aligned with the questions (in their file's order)."""

    rows: list[dict]  # the question rows, labels normalised to "yes"/"no"
    decisions: list[str]  # "yes"/"no": the reference parser's reading, or the likelihood comparison
    strict: list[str] | None  # the strict parser's "yes"/"no"/"unknown" (text scoring only)
    texts: list[str] | None  # the answer texts (text scoring only)
    scoring: str  # "text" or "likelihood"

    @property
    def labels(self) -> list[str]:
        return [r["label"] for r in self.rows]


def yes_no_decisions(answers: str | Path, questions: str | Path | None, benchmark: str,
                     options: dict[str, Any]) -> YesNo:
    """Read, check and decide every answer (see the module docstring for `options["scoring"]`).

    Every question needs exactly one answer and a yes/no label; any problem is a DataError naming the id, raised
    before a metric is computed.
    """
    if questions is None:
        raise ConfigError(f"{benchmark} needs the questions file (questions=..., e.g. the world's pope_all.jsonl)")
    scoring = options["scoring"]
    if scoring not in SCORING_MODES:
        raise ConfigError(f"{benchmark} option scoring must be one of {', '.join(SCORING_MODES)}, got {scoring!r}")
    q_path, a_path = Path(questions), Path(answers)
    q_rows, a_rows = read_rows(q_path), read_rows(a_path)
    by_question = index_by_id(q_path, q_rows, QUESTION_IDS)
    by_answer = index_by_id(a_path, a_rows, QUESTION_IDS)
    q_numbers = {id(row): n for n, row in q_rows}
    a_numbers = {id(row): n for n, row in a_rows}
    for key, row in by_question.items():
        row["label"] = _label(q_path, q_numbers[id(row)], row, key)
    ids = align_answers(a_path, by_answer, q_path, by_question, allow_extra=options["allow_extra"])
    if scoring == "auto":
        scoring = "likelihood" if all(all(f in by_answer[k] for f in LOGPROB_FIELDS) for k in ids) else "text"
    decisions: list[str] = []
    strict: list[str] = []
    texts: list[str] = []
    for key in ids:
        row = by_answer[key]
        number = a_numbers[id(row)]
        if scoring == "likelihood":
            yes, no = (_logprob(a_path, number, row, f) for f in LOGPROB_FIELDS)
            decisions.append("yes" if yes > no else "no")
        else:
            text = answer_text(a_path, number, row)
            texts.append(text)
            decisions.append(parse_reference(text))
            strict.append(parse_strict(text))
    text_mode = scoring == "text"
    return YesNo([by_question[k] for k in ids], decisions, strict if text_mode else None,
                 texts if text_mode else None, scoring)


def _scores(decisions: Sequence[str], labels: Sequence[str], strict: Sequence[str] | None) -> dict[str, float]:
    """POPE's five metrics (positive = yes) plus, in text mode, the strict parser's unknown rate."""
    metrics = {name: float(value) for name, value in pope_metrics(list(decisions), list(labels)).items()
               if name in METRIC_NAMES}
    if strict is not None:
        metrics["unknown_rate"] = safe_div(sum(s == "unknown" for s in strict), len(strict))
    return metrics


def _grouped(keys: Sequence[str], *columns: Sequence) -> dict[str, tuple[list, ...]]:
    """key -> the columns' items at that key's positions, keys in first-seen order."""
    out: dict[str, tuple[list, ...]] = {}
    for i, key in enumerate(keys):
        lists = out.setdefault(key, tuple([] for _ in columns))
        for column, values in zip(lists, columns, strict=True):
            column.append(values[i])
    return out


def _scoring_note(scoring: str) -> str:
    if scoring == "likelihood":
        return "scored by likelihood: yes iff yes_logprob > no_logprob (no unknown rate)"
    return "scored with POPE's reference parser (first sentence; 'no'/'not'/'No' -> no, else yes); unknown_rate " \
           "from the strict parser"


# ------------------------------------------------------------------------------------------ ShapesPOPE


def evaluate_pope(answers: str | Path, questions: str | Path | None = None, **options: Any) -> EvalResult:
    """ShapesPOPE: POPE's accuracy, precision, recall, F1 and yes-ratio over all questions, per
    category (random/popular/adversarial) and per probe (object/attribute).

    `questions` is a world's pope_*.jsonl (pope_all.jsonl, or pope_object_attribute.jsonl from
    write_shapes_probes); answers are rows {question_id, text} or {question_id, yes_logprob, no_logprob}.
    Headline extras: `mean_f1` (mean of the per-category F1, LLaVA's "POPE" column) and per-category accuracy/F1
    so `align eval compare` shows the split gap. Options: scoring (auto/text/likelihood), allow_extra.
    """
    opts = coerce_options(options, YES_NO_OPTIONS, "shapes-pope")
    yn = yes_no_decisions(answers, questions, "shapes-pope", opts)
    rows, decisions, strict, scoring, labels = yn.rows, yn.decisions, yn.strict, yn.scoring, yn.labels
    metrics = _scores(decisions, labels, strict)
    categories = [str(r.get("category", "all")) for r in rows]
    probes = [str(r.get("probe", "object")) for r in rows]
    groups: dict[str, dict[str, float]] = {}
    counts = {"questions": len(rows)}
    by_category = _grouped(categories, decisions, labels, strict or [None] * len(rows))
    for name, (d, lab, s) in by_category.items():
        groups[name] = _scores(d, lab, s if strict is not None else None)
        counts[name] = len(d)
    metrics["mean_f1"] = safe_div(sum(groups[c]["f1"] for c in by_category), len(by_category))
    for name in by_category:
        metrics[f"accuracy_{name}"] = groups[name]["accuracy"]
        metrics[f"f1_{name}"] = groups[name]["f1"]
    by_probe = _grouped(probes, decisions, labels, strict or [None] * len(rows), categories)
    if len(by_probe) > 1:  # one probe only: its group would repeat the "all" column
        for probe, (d, lab, s, cats) in by_probe.items():
            groups[probe] = _scores(d, lab, s if strict is not None else None)
            counts[probe] = len(d)
            for cat, (d2, lab2, s2) in _grouped(cats, d, lab, s).items():
                groups[f"{probe}/{cat}"] = _scores(d2, lab2, s2 if strict is not None else None)
                counts[f"{probe}/{cat}"] = len(d2)
    return EvalResult("shapes-pope", metrics, groups, counts, [_scoring_note(scoring)])


# ------------------------------------------------------------------------------------------ 9.4 probes


def _amber(labels: Sequence[str], responses: Sequence[str], existence: bool) -> dict[str, float]:
    """AMBER's discriminative view (docs/benchmarks.md, AMBER: Discriminative) from align.eval.amber: positive = "No", the answer that catches a
    hallucination; F1's epsilon as AMBER's (1e-3 in the existence block, else 1e-4). Returned as fractions."""
    eps = AMBER_EXISTENCE_EPS if existence else AMBER_EPS
    scores = amber_metrics(zip(labels, responses, strict=True), eps=eps)
    return {f"amber_{name}": float(value) / 100.0 for name, value in scores.items()}


def _mme(images: Sequence[str], labels: Sequence[str], answers: Sequence[str]) -> dict[str, float]:
    """MME's acc and acc+ (as fractions) and score = 100 * (acc + acc+) (points, at most 200), from align.eval.mme."""
    scores = mme_metrics([MMEItem(image, label, answer) for image, label, answer in zip(images, labels, answers,
                                                                                         strict=True)])
    return {"mme_acc": scores["acc"] / 100.0, "mme_acc_plus": scores["acc_plus"] / 100.0,
            "mme_score": float(scores["score"])}


def evaluate_probes(answers: str | Path, questions: str | Path | None = None, **options: Any) -> EvalResult:
    """The probes (existence, colour, count, relation; probes_all.jsonl from write_shapes_probes).

    Per probe type: POPE metrics (positive = yes), AMBER metrics (positive = no, prefixed amber_) and MME's
    acc/acc+/score (prefixed mme_), each computed by that benchmark's module. In text mode each view also parses
    with its own benchmark's rule; in likelihood mode all three see the same decisions. Headline: the overall
    POPE and AMBER figures, each type's MME score and their sum `mme_total` (max 800). Rates are fractions; MME
    scores are points, as MME defines them.
    """
    opts = coerce_options(options, YES_NO_OPTIONS, "shapes-probes")
    yn = yes_no_decisions(answers, questions, "shapes-probes", opts)
    rows, decisions, strict, scoring, labels = yn.rows, yn.decisions, yn.strict, yn.scoring, yn.labels
    if yn.texts is not None:  # each view reads the text with its own benchmark's rule
        mme_answers = [mme_parse(t) for t in yn.texts]
        amber_answers = [amber_parse(t) for t in yn.texts]
    else:
        mme_answers = list(decisions)
        amber_answers = [d.capitalize() for d in decisions]
    kinds = [str(r.get("probe", r.get("category", "all"))) for r in rows]
    images = [str(r.get("image", r["question_id"])) for r in rows]
    metrics = {**_scores(decisions, labels, strict), **_amber(labels, amber_answers, existence=False)}
    groups: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {"questions": len(rows)}
    columns = _grouped(kinds, decisions, labels, strict or [None] * len(rows), images, mme_answers, amber_answers)
    for kind, (d, lab, s, imgs, mme, amb) in columns.items():
        groups[kind] = {**_scores(d, lab, s if strict is not None else None),
                        **_amber(lab, amb, existence=kind == "existence"), **_mme(imgs, lab, mme)}
        counts[kind] = len(d)
        metrics[f"mme_score_{kind}"] = groups[kind]["mme_score"]
    metrics["mme_total"] = sum(groups[k]["mme_score"] for k in columns)
    notes = [_scoring_note(scoring), "amber_* take 'no' as the positive class (AMBER); mme_score = 100 * (acc + "
             "acc+) per probe type (max 200), mme_total their sum (max 800 over the four types)"]
    if scoring == "text":
        notes.append("each view parses with its own benchmark's rule: POPE's reference parser, AMBER's exact "
                     "Yes/No after first-word normalisation, MME's first-4-characters rule (other = wrong)")
    return EvalResult("shapes-probes", metrics, groups, counts, notes)
