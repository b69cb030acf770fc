"""MME-Hall (align/eval/mme.py): MME's answer parser, acc / acc+ / score per subtask and their total, worked out
by hand on tiny question files, and the input errors that must name the offending id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.errors import ConfigError, DataError
from align.eval.mme import Item, parse_answer, subtask_metrics
from align.eval.mme import evaluate as evaluate_mme


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def question(qid: str, image: str, label: str, subtask: str) -> dict:
    return {"question_id": qid, "image": image, "text": f"Is it so in {image}?", "label": label,
            "subtask": subtask}


# Two existence images and one count image, each with a yes question and a no question.
QUESTIONS = [
    question("e1y", "a.jpg", "yes", "existence"), question("e1n", "a.jpg", "no", "existence"),
    question("e2y", "b.jpg", "yes", "existence"), question("e2n", "b.jpg", "no", "existence"),
    question("c1y", "c.jpg", "yes", "count"), question("c1n", "c.jpg", "no", "count"),
]


@pytest.fixture
def questions(tmp_path) -> Path:
    return write_jsonl(tmp_path / "questions.jsonl", QUESTIONS)


def answers_file(tmp_path: Path, texts: dict[str, str]) -> Path:
    return write_jsonl(tmp_path / "answers.jsonl", [{"question_id": k, "text": v} for k, v in texts.items()])


@pytest.mark.parametrize(("text", "parsed"), [
    ("yes", "yes"), ("No", "no"), ("YES", "yes"),  # exact, any case
    ("Yes.", "yes"), ("No, there is not.", "no"),  # decided by the first four characters
    ("not sure", "no"), ("nope", "no"), ("None", "no"), ("know", "no"),  # "no" anywhere in them
    ("yesterday", "yes"), ("eyes", "yes"),  # "yes" anywhere in them
    (" no", "no"),  # one leading space still fits in four characters
    ("   no", "other"),  # three do not: nothing is stripped, as in MME's line files
    ("I think yes", "other"), ("There is no dog", "other"), ("", "other"), ("y", "other"), ("n", "other"),
])
def test_parse_answer_follows_mme_rule(text, parsed):
    """MME: lower-case; exact yes/no, else "yes" in the first 4 characters, else "no" there, else other."""
    assert parse_answer(text) == parsed


def test_always_yes_answerer(tmp_path, questions):
    """Every image has one yes and one no question, so "Yes" to all: each subtask acc = 1/2 = 50, no image has both
    right so acc+ = 0, score = 50 + 0 = 50; total = existence 50 + count 50 = 100 (only 2 of the 4 subtasks)."""
    result = evaluate_mme(answers_file(tmp_path, {q["question_id"]: "Yes" for q in QUESTIONS}), questions)
    assert result.benchmark == "mme"
    assert result.metrics == pytest.approx({"existence": 50.0, "count": 50.0, "total": 100.0})
    assert result.groups["existence"] == pytest.approx({"acc": 50.0, "acc_plus": 0.0, "score": 50.0})
    assert result.counts == {"questions": 6, "images": 3, "other_answers": 0}
    assert any("position, color" in note and "400" in note for note in result.notes)


def test_always_no_answerer(tmp_path, questions):
    """"No" to all is the mirror image: acc 50, acc+ 0, score 50 in both subtasks, total 100."""
    result = evaluate_mme(answers_file(tmp_path, {q["question_id"]: "no" for q in QUESTIONS}), questions)
    assert result.groups["count"] == pytest.approx({"acc": 50.0, "acc_plus": 0.0, "score": 50.0})
    assert result.metrics["total"] == pytest.approx(100.0)


def test_acc_plus_needs_both_questions_of_an_image(tmp_path, questions):
    """existence: a.jpg both right (Yes / No), b.jpg yes-question right ("yes, it is") and no-question wrong
    ("Yes") -> acc = 3/4 = 75, acc+ = 1/2 = 50, score 125.
    count: c.jpg yes-question answered "maybe" (other = wrong), no-question right -> acc 1/2 = 50, acc+ 0, score 50.
    total = 125 + 50 = 175; one "other" answer."""
    texts = {"e1y": "Yes", "e1n": "No", "e2y": "yes, it is", "e2n": "Yes", "c1y": "maybe", "c1n": "No."}
    result = evaluate_mme(answers_file(tmp_path, texts), questions)
    assert result.groups["existence"] == pytest.approx({"acc": 75.0, "acc_plus": 50.0, "score": 125.0})
    assert result.groups["count"] == pytest.approx({"acc": 50.0, "acc_plus": 0.0, "score": 50.0})
    assert result.metrics["total"] == pytest.approx(175.0)
    assert result.counts["other_answers"] == 1


def test_perfect_answerer_on_all_four_subtasks_scores_800(tmp_path):
    """4 subtasks x (acc 100 + acc+ 100) = 800, MME-Hall's maximum; no note about missing subtasks."""
    rows = [question(f"{s}{label}", f"{s}.jpg", label, s) for s in ("existence", "count", "position", "color")
            for label in ("yes", "no")]
    result = evaluate_mme(answers_file(tmp_path, {r["question_id"]: r["label"].title() for r in rows}),
                          write_jsonl(tmp_path / "q.jsonl", rows))
    assert result.metrics == pytest.approx({"existence": 200.0, "count": 200.0, "position": 200.0, "color": 200.0,
                                            "total": 800.0})
    assert result.notes == []


def test_subtask_metrics_groups_by_image():
    """Four items over two images, a.jpg both right, b.jpg one right: acc 3/4 = 75, acc+ 1/2 = 50, score 125."""
    items = [Item("a.jpg", "yes", "yes"), Item("a.jpg", "no", "no"), Item("b.jpg", "yes", "yes"),
             Item("b.jpg", "no", "other")]
    assert subtask_metrics(items) == pytest.approx({"acc": 75.0, "acc_plus": 50.0, "score": 125.0})


def test_missing_answer_names_the_id(tmp_path, questions):
    texts = {q["question_id"]: "Yes" for q in QUESTIONS if q["question_id"] != "c1n"}
    with pytest.raises(DataError, match="'c1n'"):
        evaluate_mme(answers_file(tmp_path, texts), questions)


def test_duplicate_answer_id_names_the_id(tmp_path, questions):
    rows = [{"question_id": q["question_id"], "text": "Yes"} for q in QUESTIONS] + [{"question_id": "e2n",
                                                                                     "text": "No"}]
    with pytest.raises(DataError, match="'e2n' appears twice"):
        evaluate_mme(write_jsonl(tmp_path / "answers.jsonl", rows), questions)


def test_answer_to_unknown_question_names_the_id(tmp_path, questions):
    texts = {q["question_id"]: "Yes" for q in QUESTIONS} | {"zzz": "No"}
    with pytest.raises(DataError, match="'zzz'"):
        evaluate_mme(answers_file(tmp_path, texts), questions)


def test_unknown_subtask_names_the_id(tmp_path):
    rows = [*QUESTIONS[:4], question("o1y", "o.jpg", "yes", "OCR"), question("o1n", "o.jpg", "no", "OCR")]
    with pytest.raises(DataError, match="'o1y' has subtask 'OCR'"):
        evaluate_mme(answers_file(tmp_path, {r["question_id"]: "Yes" for r in rows}),
                     write_jsonl(tmp_path / "q.jsonl", rows))


def test_bad_label_names_the_id(tmp_path):
    rows = [*QUESTIONS[:5], question("c1n", "c.jpg", "maybe", "count")]
    with pytest.raises(DataError, match="'c1n' has label 'maybe'"):
        evaluate_mme(answers_file(tmp_path, {r["question_id"]: "Yes" for r in rows}),
                     write_jsonl(tmp_path / "q.jsonl", rows))


def test_image_without_its_pair_is_an_error(tmp_path):
    """acc+ is defined on yes/no pairs: a lone question, or two "yes" questions, on an image is refused."""
    lone = QUESTIONS[:5]
    with pytest.raises(DataError, match="count image 'c.jpg' has questions 'c1y' labelled yes"):
        evaluate_mme(answers_file(tmp_path, {r["question_id"]: "Yes" for r in lone}),
                     write_jsonl(tmp_path / "q.jsonl", lone))
    twins = [*QUESTIONS[:5], question("c1n", "c.jpg", "yes", "count")]
    with pytest.raises(DataError, match="'c1y', 'c1n' labelled yes, yes"):
        evaluate_mme(answers_file(tmp_path, {r["question_id"]: "Yes" for r in twins}),
                     write_jsonl(tmp_path / "q2.jsonl", twins))


def test_options_and_missing_questions_are_config_errors(tmp_path, questions):
    answers = answers_file(tmp_path, {q["question_id"]: "Yes" for q in QUESTIONS})
    with pytest.raises(ConfigError, match="mme has no option 'strict'"):
        evaluate_mme(answers, questions, strict="true")
    with pytest.raises(ConfigError, match="needs --questions"):
        evaluate_mme(answers)
