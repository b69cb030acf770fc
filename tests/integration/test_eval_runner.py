"""`align eval`'s answer generation (batched, resumable, likelihood mode) and `align eval compare` on tiny models."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture
def questions(shapes_world, tmp_path):
    """The first 6 ShapesPOPE questions of the session's world, beside its images."""
    rows = (shapes_world / "pope_all.jsonl").read_text().splitlines()[:6]
    path = shapes_world / f"questions-{tmp_path.name}.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def _settings(model, **kw):
    from align.eval.runner import GenerationSettings

    return GenerationSettings(model=str(model), batch_size=4, max_new_tokens=4, **kw)


def test_answers_are_written_as_they_go_and_a_rerun_resumes(tiny_checkpoint, questions, tmp_path, monkeypatch):
    from align.eval.runner import answers_provenance, generate_answers
    from align.models.generate import Generator

    ids = [json.loads(line)["question_id"] for line in questions.read_text().splitlines()]
    out = tmp_path / "answers.jsonl"
    # A first run stopped after one batch of 4, the last row torn mid-write.
    partial = out.with_name("answers.jsonl.partial")
    generate_answers(questions, tmp_path / "full.jsonl", _settings(tiny_checkpoint("llava")), progress=False)
    full = (tmp_path / "full.jsonl").read_text().splitlines()
    assert [json.loads(line)["question_id"] for line in full] == ids
    partial.write_text("\n".join(full[:3]) + "\n" + full[3][:10])
    made_by = answers_provenance(questions, _settings(tiny_checkpoint("llava")))  # what the killed run recorded
    out.with_name("answers.jsonl.made-by.json").write_text(json.dumps(made_by))
    asked = []
    original = Generator.generate

    def counting(self, conversations, *args, **kwargs):
        asked.append(len(conversations))
        return original(self, conversations, *args, **kwargs)

    monkeypatch.setattr(Generator, "generate", counting)
    generate_answers(questions, out, _settings(tiny_checkpoint("llava")), progress=False)
    assert sum(asked) == len(ids) - 3  # only the unanswered questions (the torn row included) are asked again
    assert not partial.exists()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["question_id"] for r in rows) == sorted(ids)
    assert {r["question_id"]: r["text"] for r in rows} == {json.loads(x)["question_id"]: json.loads(x)["text"]
                                                           for x in full}  # greedy: the same answers


def test_answers_made_by_another_model_are_discarded_not_mixed(tiny_checkpoint, questions, tmp_path, capsys):
    """Model A answered 3 of 6 questions and was killed; a rerun with model B into the same file answers all 6
    with B and says so. A finished file of A is not returned for B either."""
    from align.eval.runner import answers_provenance, generate_answers

    a, b = tiny_checkpoint("llava"), tiny_checkpoint("llava", seed=1)
    want_b = generate_answers(questions, tmp_path / "b.jsonl", _settings(b), progress=False).read_text()
    full_a = generate_answers(questions, tmp_path / "a.jsonl", _settings(a), progress=False).read_text()
    out = tmp_path / "answers.jsonl"
    out.with_name("answers.jsonl.partial").write_text("".join(full_a.splitlines(keepends=True)[:3]))
    out.with_name("answers.jsonl.made-by.json").write_text(json.dumps(answers_provenance(questions, _settings(a))))
    capsys.readouterr()
    generate_answers(questions, out, _settings(b), progress=False)
    assert "holds answers made otherwise (model, model_files); answering again" in capsys.readouterr().err
    assert out.read_text() == want_b
    generate_answers(questions, out, _settings(a), progress=False)  # the finished file of B, asked for A
    assert out.read_text() == full_a
    generate_answers(questions, out, _settings(a, seed=5), progress=False)
    assert "(generation)" in capsys.readouterr().err


def test_likelihood_mode_compares_yes_and_no(tiny_checkpoint, questions, tmp_path):
    from align.eval.runner import generate_answers

    out = generate_answers(questions, tmp_path / "answers.jsonl", _settings(tiny_checkpoint("llava"),
                                                                            mode="likelihood"), progress=False)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6
    for row in rows:
        assert row["yes_logprob"] < 0 and row["no_logprob"] < 0
        assert row["text"] == ("yes" if row["yes_logprob"] > row["no_logprob"] else "no")
    assert len({round(r["yes_logprob"], 6) for r in rows}) > 1  # the image and question reach the model


def test_bad_questions_fail_before_the_model_loads(tmp_path):
    from align.errors import DataError
    from align.eval.runner import generate_answers

    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question_id": 1, "image": "a.png", "text": "Is there a star?"}) + "\n"
                    + json.dumps({"question_id": 1, "image": "b.png", "text": "Is there a moon?"}) + "\n")
    with pytest.raises(DataError, match="question_id 1 appears twice"):
        generate_answers(path, tmp_path / "a.jsonl", _settings("no-such-model"), progress=False)
    path.write_text(json.dumps({"question_id": 7, "image": "a.png"}) + "\n")
    with pytest.raises(DataError, match="question 7 has no text"):
        generate_answers(path, tmp_path / "a.jsonl", _settings("no-such-model"), progress=False)


def test_compare_prints_runs_side_by_side_and_draws_a_png(run_cli, tmp_path):
    from PIL import Image

    for name, f1 in (("before", 0.61), ("after", 0.83)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(
            {"benchmark": "shapes-pope", "metrics": {"f1": f1, "accuracy": f1 - 0.01}}))
    result = run_cli("eval", "compare", tmp_path / "before", tmp_path / "after", "--png", tmp_path / "c.png")
    assert result.code == 0, result
    assert "0.6100" in result.out and "0.8300" in result.out and "before" in result.out
    with Image.open(tmp_path / "c.png") as image:
        assert image.size[0] > 300 and image.getcolors(1 << 16)  # a real drawing, not a blank canvas
        assert len(image.getcolors(1 << 16)) > 3
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "metrics.json").write_text(json.dumps({"benchmark": "chair", "metrics": {"chair_i": 1}}))
    mixed = run_cli("eval", "compare", tmp_path / "before", tmp_path / "other")
    assert mixed.code == 2 and "different benchmarks" in mixed.err
    missing = run_cli("eval", "compare", tmp_path / "nowhere")
    assert missing.code == 2 and "no metrics.json" in missing.err
