"""`align eval BENCH` from the command line: scoring given answers, generating them with a tiny model first, and
one-line errors for answers and questions that do not line up."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def pope(shapes_world, tmp_path):
    """The shapes world's POPE questions (8 of them) and an always-"yes" answers file."""
    rows = [json.loads(line) for line in (shapes_world / "pope_all.jsonl").read_text().splitlines()[:8]]
    questions = shapes_world / f"pope8-{tmp_path.name}.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps({"question_id": r["question_id"], "text": "Yes, there is."}) + "\n"
                               for r in rows))
    return questions, answers, rows


def test_scores_given_answers_and_writes_metrics(pope, run_cli, tmp_path):
    questions, answers, rows = pope
    result = run_cli("eval", "pope", "--answers", answers, "--questions", questions, "--out", tmp_path / "run")
    assert result.code == 0, result
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    positives = sum(r["label"] == "yes" for r in rows)
    assert 0 < positives < len(rows)
    # always "yes": accuracy = precision = share of yes labels, recall 1, yes-ratio 1
    assert metrics["benchmark"] == "pope" and metrics["answers"] == str(answers)
    assert metrics["metrics"]["accuracy"] == pytest.approx(positives / len(rows))
    assert metrics["metrics"]["recall"] == pytest.approx(1.0)
    assert metrics["metrics"]["yes_ratio"] == pytest.approx(1.0)
    assert "accuracy" in result.out and "f1" in result.out


def test_generates_with_a_model_then_scores(pope, tiny_checkpoint, run_cli, tmp_path):
    questions, _, rows = pope
    out = tmp_path / "run"
    result = run_cli("eval", "pope", "--model", tiny_checkpoint("llava"), "--questions", questions, "--out", out,
                     "--max-new-tokens", "3", "--batch-size", "4")
    assert result.code == 0, result
    answers = [json.loads(line) for line in (out / "answers.jsonl").read_text().splitlines()]
    assert [a["question_id"] for a in answers] == [r["question_id"] for r in rows]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == str(tiny_checkpoint("llava")) and metrics["mode"] == "generate"
    assert 0.0 <= metrics["metrics"]["accuracy"] <= 1.0


@pytest.mark.parametrize(("args", "message"), [
    (["--answers", "A", "--model", "M", "--questions", "Q"], "give either --answers FILE"),
    (["--model", "M", "--questions", "Q"], "--model needs --out DIR"),
    (["--answers", "A", "--questions", "Q", "foo=1"], "pope has no option 'foo'"),
])
def test_bad_usage_is_one_line(args, message, pope, run_cli):
    questions, answers, _ = pope
    swap = {"A": str(answers), "Q": str(questions)}
    result = run_cli("eval", "pope", *[swap.get(a, a) for a in args])
    assert result.code == 2, result
    assert message in result.err and len(result.err.strip().splitlines()) == 1, result.err


def test_answers_that_do_not_line_up_name_the_id(pope, run_cli, tmp_path):
    questions, answers, rows = pope
    lines = answers.read_text().splitlines()
    short = tmp_path / "short.jsonl"
    short.write_text("\n".join(lines[:-1]) + "\n")
    missing = run_cli("eval", "pope", "--answers", short, "--questions", questions)
    assert missing.code == 2 and repr(rows[-1]["question_id"]) in missing.err, missing.err
    twice = tmp_path / "twice.jsonl"
    twice.write_text("\n".join(lines + lines[:1]) + "\n")
    duplicate = run_cli("eval", "pope", "--answers", twice, "--questions", questions)
    assert duplicate.code == 2 and "appears twice" in duplicate.err, duplicate.err
    assert not (tmp_path / "eval-pope").exists()
