"""`align build-pairs` on shapes sources: exactly what changed between chosen and rejected, determinism, resume
after a kill, the generation paths with a tiny model, and bad input."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from align.data.io import read_records
from data_builders import BUILDERS

pytest.importorskip("torch")


def _text(messages):
    return "".join(item["text"] for item in messages[0]["content"] if item["type"] == "text")


def _build(run_cli, method, world, out, *extra):
    result = run_cli("build-pairs", method, "--input", world / "sources.jsonl", "--out", out, *extra)
    assert result.code == 0, result
    return read_records(out)


def _sources(world):
    return {json.loads(line)["id"]: json.loads(line) for line in (world / "sources.jsonl").read_text().splitlines()}


def _check_spans(row):
    """Outside its spans the rejected text is the chosen text; inside, each span pair differs."""
    chosen, rejected = _text(row["chosen"]), _text(row["rejected"])
    cs, rs = row["chosen_spans"], row["rejected_spans"]
    assert len(cs) == len(rs) >= 1
    rebuilt, last = [], 0
    for (c0, c1), (r0, r1) in zip(cs, rs, strict=True):
        rebuilt.append(chosen[last:c0])
        rebuilt.append(rejected[r0:r1])
        assert chosen[c0:c1] != rejected[r0:r1]
        last = c1
    rebuilt.append(chosen[last:])
    assert "".join(rebuilt) == rejected
    return [(chosen[a:b], rejected[c:d]) for (a, b), (c, d) in zip(cs, rs, strict=True)]


@pytest.mark.parametrize("subset", ["closed", "open"])
def test_halva_swaps_only_the_spans_and_never_inserts_a_present_object(subset, shapes_world, run_cli, tmp_path):
    from align.data.vocab import get_vocabulary

    vocab = get_vocabulary("shapes")
    rows = _build(run_cli, "halva", shapes_world, tmp_path / "out", "vocabulary=shapes", f"subset={subset}")
    sources = _sources(shapes_world)
    assert len(rows) >= 10
    for row in rows:
        meta = json.loads(row["meta"])
        present = {o["name"] for o in sources[meta["source_id"]]["objects"]}
        for before, after in _check_spans(row):
            assert vocab.canonical(before.split()[-1]) in present
            assert vocab.canonical(after.split()[-1]) not in present, (before, after, present)
        assert row["method"] == "halva" and meta["subset"] == subset


def test_halva_qa_is_balanced_yes_no(shapes_world, run_cli, tmp_path):
    rows = _build(run_cli, "halva", shapes_world, tmp_path / "out", "vocabulary=shapes", "subset=qa")
    answers = [_text(r["chosen"]) for r in rows]
    assert abs(answers.count("Yes") - answers.count("No")) <= 1 and set(answers) == {"Yes", "No"}
    sources = _sources(shapes_world)
    for row in rows:
        meta = json.loads(row["meta"])
        present = {o["name"] for o in sources[meta["source_id"]]["objects"]}
        assert (meta["object"] in present) == (_text(row["chosen"]) == "Yes")
        assert {_text(row["chosen"]), _text(row["rejected"])} == {"Yes", "No"}


@pytest.mark.parametrize("method, extra", [("povid", []), ("bpo", ["negatives=[injection]"])])
def test_rule_based_injection_records_category_and_spans(method, extra, shapes_world, run_cli, tmp_path):
    rows = _build(run_cli, method, shapes_world, tmp_path / "out", "vocabulary=shapes", *extra)
    categories = set()
    for row in rows:
        _check_spans(row)
        meta = json.loads(row["meta"])
        categories.add(meta["category"])
        if method == "bpo":
            assert (row["chosen_score"], row["rejected_score"]) == (1.0, 0.0)
    assert len(categories) >= 2  # several injection categories occur


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != "dataset.json":
            h.update(path.relative_to(folder).as_posix().encode() + path.read_bytes())
    info = json.loads((folder / "dataset.json").read_text())
    info.pop("command")
    h.update(json.dumps(info, sort_keys=True).encode())
    return h.hexdigest()


def test_same_inputs_give_identical_output(shapes_world, run_cli, tmp_path):
    _build(run_cli, "halva", shapes_world, tmp_path / "a", "vocabulary=shapes", "--seed", "5")
    _build(run_cli, "halva", shapes_world, tmp_path / "b", "vocabulary=shapes", "--seed", "5")
    _build(run_cli, "halva", shapes_world, tmp_path / "c", "vocabulary=shapes", "--seed", "6")
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_resume_after_a_kill_gives_the_uninterrupted_output(shapes_world, run_cli, tmp_path, monkeypatch):
    from data_builders.halva import HalvaBuilder

    args = ["vocabulary=shapes", "chunk_size=3"]
    _build(run_cli, "halva", shapes_world, tmp_path / "full", *args)

    original = HalvaBuilder.build
    calls = {"n": 0}

    def dies_on_third_chunk(self, sources, chunk_seed):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # what Ctrl-C (or a kill between chunks) leaves behind
        return original(self, sources, chunk_seed)

    monkeypatch.setattr(HalvaBuilder, "build", dies_on_third_chunk)
    out = tmp_path / "resumed"
    result = run_cli("build-pairs", "halva", "--input", shapes_world / "sources.jsonl", "--out", out, *args)
    assert result.code == 130 and not out.exists()
    work = tmp_path / ".resumed.work"
    assert len(list(work.glob("chunk-*.json"))) == 2
    monkeypatch.setattr(HalvaBuilder, "build", original)
    _build(run_cli, "halva", shapes_world, out, *args)
    assert _digest(out) == _digest(tmp_path / "full")
    assert not work.exists()


def test_a_foreign_work_folder_is_never_mixed_in(shapes_world, run_cli, tmp_path):
    """Chunk files of another run (other settings or input) sit in the work folder: they are not reused."""
    args = ["vocabulary=shapes", "chunk_size=3"]
    _build(run_cli, "halva", shapes_world, tmp_path / "clean", *args)
    work = tmp_path / ".out.work"
    work.mkdir()
    for i in range(3):
        (work / f"chunk-{i:06d}-0123456789abcdef.json").write_text(json.dumps({"read": 3, "pairs": [], "skipped": {}}))
    _build(run_cli, "halva", shapes_world, tmp_path / "out", *args)
    assert _digest(tmp_path / "out") == _digest(tmp_path / "clean")
    assert not work.exists()


def test_resume_rebuilds_exactly_the_chunks_whose_rows_changed(shapes_world, run_cli, tmp_path, monkeypatch):
    """Killed after two chunks of three rows; then row 1's caption changes (same id). The rerun rebuilds chunk 0,
    reuses chunk 1, and writes what a fresh build of the changed input writes: no old text survives."""
    from data_builders.halva import HalvaBuilder

    sources = tmp_path / "src" / "sources.jsonl"
    sources.parent.mkdir()
    rows = [json.loads(line) for line in (shapes_world / "sources.jsonl").read_text().splitlines()]
    sources.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["vocabulary=shapes", "chunk_size=3", "--image-root", shapes_world]
    original = HalvaBuilder.build
    calls = {"n": 0}

    def counting(self, chunk, chunk_seed, die_at=None):
        calls["n"] += 1
        if calls["n"] == die_at:
            raise KeyboardInterrupt
        return original(self, chunk, chunk_seed)

    monkeypatch.setattr(HalvaBuilder, "build", lambda self, c, chunk_seed: counting(self, c, chunk_seed, die_at=3))
    out = tmp_path / "out"
    assert run_cli("build-pairs", "halva", "--input", sources, "--out", out, *args).code == 130

    rows[1]["caption"] = rows[1]["caption"] + " The scene is quiet."
    sources.write_text("".join(json.dumps(r) + "\n" for r in rows))
    calls["n"] = 0
    monkeypatch.setattr(HalvaBuilder, "build", lambda self, c, chunk_seed: counting(self, c, chunk_seed))
    result = run_cli("build-pairs", "halva", "--input", sources, "--out", out, *args)
    assert result.code == 0, result
    n_chunks = -(-len(rows) // 3)
    assert calls["n"] == n_chunks - 1  # chunk 1 reused, chunk 0 rebuilt, the rest built
    fresh = tmp_path / "fresh"
    assert run_cli("build-pairs", "halva", "--input", sources, "--out", fresh, *args).code == 0
    assert _digest(out) == _digest(fresh)
    texts = [_text(r["chosen"]) for r in read_records(out)]
    assert any("The scene is quiet." in t for t in texts)


@pytest.mark.parametrize("method, extra", [
    ("stic", ["max_new_tokens=6"]),
    ("povid", ["stage=2", "max_new_tokens=6", "vocabulary=shapes"]),
    ("bpo", ["negatives=[weakening]", "max_new_tokens=6", "vocabulary=shapes"]),
])
def test_generation_builders_with_a_tiny_model(method, extra, tiny_checkpoint, shapes_world, run_cli, tmp_path):
    rows = _build(run_cli, method, shapes_world, tmp_path / "out", "--model", tiny_checkpoint("llava"),
                  "--limit", "6", "batch_size=4", *extra)
    assert 1 <= len(rows) <= 6
    for row in rows:
        meta = json.loads(row["meta"])
        assert _text(row["chosen"]) != _text(row["rejected"])
        if method == "stic":
            corrupted = meta["branch"] == "corrupted_image"
            assert meta["image_corruption"] == corrupted
            if corrupted:
                assert meta["corruption"][0]["corruption"] in ("downscale", "color_jitter")
        else:
            assert meta["noise_step"] == (500 if method == "povid" else 900)
            assert meta["corruption"][0]["corruption"] == "diffusion_noise"


def test_rows_without_required_fields_are_a_row_numbered_error(tmp_path, make_image, run_cli):
    make_image(tmp_path / "a.png")
    rows = [{"id": "a", "images": ["a.png"], "caption": "A red circle.", "objects": [{"name": "circle"}]},
            {"id": "b", "images": ["a.png"], "caption": "A red circle."}]
    data = tmp_path / "sources.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_cli("build-pairs", "halva", "--input", data, "--out", tmp_path / "out", "vocabulary=shapes")
    assert result.code == 2
    assert result.err.strip().splitlines() == [f"error: {data}, row 2, field 'objects': method 'halva' needs objects"]
    assert not (tmp_path / "out").exists()


def test_nothing_swappable_is_skipped_and_counted(tmp_path, make_image, run_cli):
    make_image(tmp_path / "a.png")
    rows = [{"id": "a", "images": ["a.png"], "caption": "A red circle.", "objects": [{"name": "circle"}]},
            {"id": "b", "images": ["a.png"], "caption": "Nothing to see.", "objects": [{"name": "circle"}]}]
    data = tmp_path / "sources.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_cli("build-pairs", "halva", "--input", data, "--out", tmp_path / "out", "vocabulary=shapes")
    assert result.code == 0, result
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert info["counts"]["rows"] == 1 and info["counts"]["skipped_no swappable object"] == 1
    assert "skipped: no swappable object" in result.out


def test_unknown_method_and_bad_model(shapes_world, run_cli, tmp_path):
    result = run_cli("build-pairs", "nope", "--input", shapes_world / "sources.jsonl", "--out", tmp_path / "o")
    assert result.code == 2 and f"unknown method 'nope'; known: {', '.join(sorted(BUILDERS))}" in result.err
    result = run_cli("build-pairs", "stic", "--input", shapes_world / "sources.jsonl", "--out", tmp_path / "o",
                     "--model", tmp_path / "no-model")
    assert result.code == 2 and len(result.err.strip().splitlines()) == 1 and "no such folder" in result.err
    result = run_cli("build-pairs", "stic", "--input", shapes_world / "sources.jsonl", "--out", tmp_path / "o")
    assert result.code == 2 and "pass --model" in result.err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("method", ["halva", "povid"])
def test_a_shapes_world_brings_its_own_vocabulary(method, shapes_world, run_cli, tmp_path):
    """The plainest invocation: no vocabulary given, the world's dataset.json says it is a shapes world."""
    rows = _build(run_cli, method, shapes_world, tmp_path / "out")
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert info["settings"]["vocabulary"] == "shapes"
    assert len(rows) >= 10
    for row in rows:
        _check_spans(row)


def test_objects_unknown_to_the_vocabulary_name_the_vocabularies_that_fit(shapes_world, run_cli, tmp_path):
    result = run_cli("build-pairs", "halva", "--input", shapes_world / "sources.jsonl", "--out", tmp_path / "out",
                     "vocabulary=coco")
    assert result.code == 2, result
    message = result.err.strip()
    assert len(message.splitlines()) == 1 and "Traceback" not in message
    assert "is a class of vocabulary 'coco'" in message and "pass vocabulary=shapes" in message
    assert not (tmp_path / "out").exists()


def test_a_shapes_world_folder_as_input_names_its_files(shapes_world, run_cli, tmp_path):
    result = run_cli("build-pairs", "halva", "--input", shapes_world, "--out", tmp_path / "out")
    assert result.code == 2, result
    assert "is a shapes world" in result.err and "sources.jsonl" in result.err


def test_an_unknown_strategy_is_a_config_error(shapes_world, run_cli, tmp_path):
    result = run_cli("build-pairs", "halva", "--input", shapes_world / "sources.jsonl", "--out", tmp_path / "out",
                     "strategy=bogus")
    assert result.code == 2 and "strategy must be one of" in result.err, result
