"""The bad-input promise, kind by kind: exit 2, one `error:` line naming the file (and row and field where there
is one), no traceback, nothing left behind at the output path."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")


def _lines(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def corpus(shapes_world, pairs):
    """Bad files beside the world's images (so image paths resolve), one defect each."""
    w = shapes_world
    pope = [json.loads(line) for line in (w / "pope_all.jsonl").read_text().splitlines()[:3]]
    sft = json.loads((w / "sft.jsonl").read_text().splitlines()[0])
    sources = [json.loads(line) for line in (w / "sources.jsonl").read_text().splitlines()[:4]]
    pair = json.loads((pairs / "fixed.jsonl").read_text().splitlines()[0])
    files = {}
    (w / "bad-utf8.jsonl").write_bytes(json.dumps(pope[0]).encode()[:-2] + b'\xff"}\n')
    files["non-utf8"] = w / "bad-utf8.jsonl"
    files["list-id"] = _lines(w / "bad-list-id.jsonl", [dict(pope[0], question_id=[1])])
    files["empty"] = w / "bad-empty.jsonl"
    files["empty"].write_text("")
    files["text-ids"] = _lines(w / "bad-text-ids.jsonl", [{"question_id": str(q["question_id"]), "text": "yes"}
                                                         for q in pope])
    files["questions"] = _lines(w / "bad-questions.jsonl", pope)
    files["missing-image"] = _lines(w / "bad-missing-image.jsonl", [dict(q, image="images/none.png") for q in pope])
    files["array"] = w / "bad-array.jsonl"
    files["array"].write_text(json.dumps([sft], indent=1))
    files["assistant-first"] = _lines(w / "bad-assistant-first.jsonl", [dict(sft, messages=sft["messages"][::-1])])
    files["same-text"] = _lines(pairs / "bad-same-text.jsonl", [dict(pair, rejected=pair["chosen"])])
    files["bad-image"] = _lines(w / "bad-image.jsonl", sources[:2] + [dict(sources[2], images=["images/none.png"])])
    files["bad-deepspeed"] = w / "bad-deepspeed.json"
    files["bad-deepspeed"].write_text("{zero: 3")
    return files


CASES = {
    "eval answers not UTF-8": (["eval", "shapes-pope", "--answers", "{non-utf8}", "--questions", "{questions}"],
                               "not UTF-8 text", True),
    "eval questions not UTF-8": (["eval", "shapes-pope", "--model", "{tiny}", "--questions", "{non-utf8}"],
                                 "not UTF-8 text", True),
    "eval question_id a list": (["eval", "shapes-pope", "--model", "{tiny}", "--questions", "{list-id}"],
                                "question_id must be a string or a number", True),
    "eval answer id a list": (["eval", "shapes-pope", "--answers", "{list-id}", "--questions", "{questions}"],
                              "question_id must be a string or a number", True),
    "eval empty questions": (["eval", "shapes-pope", "--model", "{tiny}", "--questions", "{empty}"],
                             "has no questions", False),
    "eval image missing": (["eval", "shapes-pope", "--model", "{tiny}", "--questions", "{missing-image}"],
                           "none.png", True),
    "eval ids as text": (["eval", "shapes-pope", "--answers", "{text-ids}", "--questions", "{questions}"],
                         "write the ids the same way", False),
    "show empty file": (["data", "show", "{empty}"], "has no rows", False),
    "show JSON array in .jsonl": (["data", "show", "{array}"], "holds one JSON array", True),
    "show assistant first": (["data", "show", "{assistant-first}"], "before any user turn", True),
    "sft assistant first": (["sft", "--model", "{tiny}", "--data", "{assistant-first}"], "before any user turn", True),
    "dpo kl_data assistant first": (["dpo", "--variant", "halva", "--model", "{tiny}", "--data", "{pairs}",
                                     "kl_data={assistant-first}"], "before any user turn", True),
    "dpo chosen equals rejected": (["dpo", "--model", "{tiny}", "--data", "{same-text}"], "the same text", True),
    "build-pairs bad image": (["build-pairs", "halva", "--input", "{bad-image}"], "none.png", True),
    "sft bad deepspeed JSON": (["sft", "--model", "{tiny}", "--data", "{questions}", "--deepspeed", "{bad-deepspeed}"],
                               "bad-deepspeed.json is not valid JSON", False),
}
OUT_FLAG = {"eval": "--out", "sft": "--output-dir", "dpo": "--output-dir", "build-pairs": "--out"}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_naming_the_place(case, corpus, tiny_checkpoint, pairs, run_cli, tmp_path):
    args, message, names_row = CASES[case]
    values = {**{k: str(v) for k, v in corpus.items()}, "tiny": str(tiny_checkpoint("llava")),
              "pairs": str(pairs / "fixed.jsonl")}
    argv = [a.format(**values) if "{" in a else a for a in args]
    out = tmp_path / "out"
    if argv[0] in OUT_FLAG:
        argv += [OUT_FLAG[argv[0]], str(out)]
    result = run_cli(*argv)
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.err
    assert "Traceback" not in result.err + result.out
    if names_row:
        assert ", row " in lines[0], lines[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no work folder or temporary


@pytest.mark.parametrize("defect", ["not-an-image", "too-long"])
def test_ppo_checks_every_prompt_before_the_first_rollout(defect, shapes_world, tiny_checkpoint, run_cli, tmp_path,
                                                          monkeypatch):
    """A prompt row whose image is not an image, or whose prompt is over max_prompt_length, stops `align ppo`
    before anything trains, naming the row; the output folder is not left behind."""
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # ppo_rewards
    rows = [json.loads(line) for line in (shapes_world / "sft.jsonl").read_text().splitlines()[:4]]
    extra = []
    if defect == "not-an-image":
        (shapes_world / "notes.png").write_text("not a picture")
        rows[2]["images"] = ["notes.png"]
        message = "row 3, field 'images'"
    else:
        rows[2]["messages"][0]["content"][-1]["text"] = "Describe " + "very " * 300 + "carefully."
        extra = ["max_prompt_length=256"]
        message = "row 3, field 'prompt': the prompt is"
    data = _lines(shapes_world / f"ppo-{defect}.jsonl", rows)
    out = tmp_path / "out"
    result = run_cli("ppo", "--model", tiny_checkpoint("llava"), "--data", data, "--reward-func", "ppo_rewards:length",
                     "--output-dir", out, "max_steps=1", "per_device_train_batch_size=2", "rollout_batch_size=2",
                     *extra)
    assert result.code == 2, result
    line = result.err.strip().splitlines()[-1]
    assert line.startswith("error: ") and message in line, line
    assert not out.exists()


# Every command that reads a records file x the ways a JSON Lines file can be broken.
READERS = {
    "data show": lambda f, tiny, out: ["data", "show", f],
    "build-pairs": lambda f, tiny, out: ["build-pairs", "halva", "--input", f, "--out", out],
    "sft": lambda f, tiny, out: ["sft", "--model", tiny, "--data", f, "--output-dir", out],
    "dpo": lambda f, tiny, out: ["dpo", "--model", tiny, "--data", f, "--output-dir", out],
    "reward": lambda f, tiny, out: ["reward", "--model", tiny, "--data", f, "--output-dir", out],
    "ppo": lambda f, tiny, out: ["ppo", "--model", tiny, "--data", f, "--output-dir", out, "--reward-func",
                                 "ppo_rewards:length"],
}
BROKEN = {
    "not UTF-8": (b'{"id": "a", "caption": "caf\xe9"}\n', "not UTF-8 text"),
    "malformed line": (b'{"id": "a"}\n{"id": "b",\n', "malformed JSON on line 2"),
    "not an object": (b'{"id": "a"}\n"just text"\n', "expected a JSON object on line 2"),
    "JSON array": (b'[\n  {"id": "a"}\n]\n', "holds one JSON array"),
    "empty": (b"", "no rows"),
    "missing": (None, "no such file"),
}


@pytest.mark.parametrize("reader", list(READERS))
@pytest.mark.parametrize("defect", list(BROKEN))
def test_every_reader_refuses_every_broken_file_the_same_way(reader, defect, tiny_checkpoint, run_cli, tmp_path,
                                                             monkeypatch):
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).parent))  # ppo_rewards
    content, message = BROKEN[defect]
    path = tmp_path / "records.jsonl"
    if content is not None:
        path.write_bytes(content)
    out = tmp_path / "out"
    result = run_cli(*READERS[reader](path, tiny_checkpoint("llava"), out))
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}") and message in lines[0], result.err
    assert "Traceback" not in result.err + result.out
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
