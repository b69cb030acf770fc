"""Feedback-based pair builders on shapes-world rows: rlhfv (correctional feedback -> spans) and vlfeedback
(multi-aspect ratings -> every strictly ordered pair), with exactly what each pair holds checked, and what bad
rows count as."""

from __future__ import annotations

import json

import pytest

from align.data.io import read_dataset_json, read_records

pytest.importorskip("torch")


def _text(messages):
    return "".join(item["text"] for item in messages[0]["content"] if item["type"] == "text")


def _world_rows(world, n=None):
    """The world's source rows; their image paths resolve under `--image-root world`."""
    return [json.loads(line) for line in (world / "sources.jsonl").read_text().splitlines()][:n]


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _hallucinate(caption: str, present: set[str]) -> tuple[str, str, str]:
    """The caption with its first shape name swapped for an absent one: (original, the true name, the false one)."""
    from align.data import shapes_vocab

    name = next(n for n in shapes_vocab.CLASSES if f" {n}" in caption)
    wrong = next(n for n in shapes_vocab.CLASSES if n not in present and n != name)
    return caption.replace(f" {name}", f" {wrong}", 1), name, wrong


def test_rlhfv_marks_exactly_the_corrected_words(shapes_world, run_cli, tmp_path):
    rows = []
    for row in _world_rows(shapes_world, 8):
        present = {o["name"] for o in row["objects"]}
        original, _, _ = _hallucinate(row["caption"], present)
        rows.append({"id": row["id"], "images": row["images"], "original": original, "corrected": row["caption"]})
    rows.append({**rows[0], "id": "unchanged", "original": rows[0]["corrected"]})  # nothing was corrected
    source = _write(tmp_path / "corrections.jsonl", rows)
    result = run_cli("build-pairs", "rlhfv", "--input", source, "--out", tmp_path / "out",
                     "--image-root", shapes_world)
    assert result.code == 0, result
    pairs = read_records(tmp_path / "out")
    assert len(pairs) == 8
    by_id = {r["id"]: r for r in rows}
    for pair in pairs:
        row = by_id[json.loads(pair["meta"])["source_id"]]
        chosen, rejected = _text(pair["chosen"]), _text(pair["rejected"])
        assert (chosen, rejected) == (row["corrected"], row["original"])
        # one segment each side: the true shape name in the chosen text, the false one in the rejected
        (c0, c1), = pair["chosen_spans"]
        (r0, r1), = pair["rejected_spans"]
        assert chosen[:c0] == rejected[:r0] and chosen[c1:] == rejected[r1:]
        assert chosen[c0:c1] != rejected[r0:r1] and " " not in chosen[c0:c1]
        assert pair["prompt"][0]["content"][0] == {"type": "image"}
    counts = read_dataset_json(tmp_path / "out")["counts"]
    assert counts["skipped_not corrected"] == 1 and counts["pairs"] == 8


def test_rlhfv_pairs_train_ddpo(shapes_world, run_cli, tmp_path, tiny_checkpoint):
    rows = []
    for row in _world_rows(shapes_world, 4):
        original, _, _ = _hallucinate(row["caption"], {o["name"] for o in row["objects"]})
        rows.append({"id": row["id"], "images": row["images"], "original": original, "corrected": row["caption"]})
    source = _write(tmp_path / "corrections.jsonl", rows)
    assert run_cli("build-pairs", "rlhfv", "--input", source, "--out", tmp_path / "pairs",
                   "--image-root", shapes_world).code == 0
    result = run_cli("dpo", "--variant", "ddpo", "--model", tiny_checkpoint("llava"), "--data", tmp_path / "pairs",
                     "--output-dir", tmp_path / "run", "max_steps=3", "per_device_train_batch_size=2",
                     "ddpo_gamma=3.0", "save_strategy=no")
    assert result.code == 0, result
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    assert record["complete"] and record["global_step"] == 3


def _ratings(helpful, faithful):
    return {"Helpfulness": {"Rating": str(helpful), "Rationale": "..."}, "Visual Faithfulness": {"Rating": faithful}}


def test_vlfeedback_every_strictly_ordered_pair_with_mean_scores(shapes_world, run_cli, tmp_path):
    world = _world_rows(shapes_world, 3)
    rows = [
        # means 4.5, 3.0, 4.5, 1.0: pairs (0,1) (0,3) (1,3) (2,1) (2,3); (0,2) tie dropped
        {"id": "a", "images": world[0]["images"], "question": "Describe the shapes.",
         "responses": ["r0", "r1", "r2", "r3"],
         "ratings": [_ratings(5, 4), _ratings(3, 3), _ratings(4, 5), _ratings(1, 1)]},
        # one overall rating per response
        {"id": "b", "images": world[1]["images"], "responses": ["x", "y"], "ratings": [2, "4"]},
        # a response without its Visual Faithfulness rating: the row is skipped, not scored 0
        {"id": "c", "images": world[2]["images"], "responses": ["p", "q"],
         "ratings": [_ratings(5, 5), {"Helpfulness": 1}]},
        {"id": "d", "images": world[2]["images"], "responses": ["p", "q"], "ratings": [_ratings(5, 5), _ratings("N/A", 3)]},
        {"id": "e", "images": world[2]["images"], "responses": ["p", "q"], "ratings": [3, 3]},
    ]
    source = _write(tmp_path / "rated.jsonl", rows)
    result = run_cli("build-pairs", "vlfeedback", "--input", source, "--out", tmp_path / "out",
                     "--image-root", shapes_world)
    assert result.code == 0, result
    pairs = read_records(tmp_path / "out")
    got = {(json.loads(p["meta"])["source_id"], _text(p["chosen"]), _text(p["rejected"])):
           (p["chosen_score"], p["rejected_score"]) for p in pairs}
    assert got == {("a", "r0", "r1"): (4.5, 3.0), ("a", "r0", "r3"): (4.5, 1.0), ("a", "r1", "r3"): (3.0, 1.0),
                   ("a", "r2", "r1"): (4.5, 3.0), ("a", "r2", "r3"): (4.5, 1.0), ("b", "y", "x"): (4.0, 2.0)}
    assert _text(pairs[0]["prompt"]) == "Describe the shapes."
    counts = read_dataset_json(tmp_path / "out")["counts"]
    assert counts["skipped_ratings missing an aspect"] == 1 and counts["skipped_a non-numeric rating"] == 1
    assert counts["skipped_every pair tied"] == 1


def test_vlfeedback_named_aspects_only(shapes_world, run_cli, tmp_path):
    world = _world_rows(shapes_world, 1)
    rows = [{"id": "a", "images": world[0]["images"], "responses": ["r0", "r1"],
             "ratings": [_ratings(5, 1), _ratings(1, 5)]}]  # tied over both aspects
    source = _write(tmp_path / "rated.jsonl", rows)
    tied = run_cli("build-pairs", "vlfeedback", "--input", source, "--out", tmp_path / "both",
                   "--image-root", shapes_world)
    assert tied.code == 2 and "made no pairs" in tied.err and "every pair tied" in tied.err
    result = run_cli("build-pairs", "vlfeedback", "--input", source, "--out", tmp_path / "faithful",
                     "--image-root", shapes_world, "aspects=[Visual Faithfulness]")
    assert result.code == 0, result
    (pair,) = read_records(tmp_path / "faithful")
    assert (_text(pair["chosen"]), pair["chosen_score"], pair["rejected_score"]) == ("r1", 5.0, 1.0)


def _swap(caption: str, k: int) -> str:
    """The caption with its k-th shape sentence naming another class (one wrong claim per swap)."""
    from align.data import shapes_vocab

    sentences = caption.split(". ")
    for i in range(1, len(sentences)):
        name = next((n for n in shapes_vocab.CLASSES if f" {n}" in sentences[i]), None)
        if name is not None and k > 0:
            other = shapes_vocab.CLASSES[(shapes_vocab.CLASSES.index(name) + 5) % len(shapes_vocab.CLASSES)]
            sentences[i] = sentences[i].replace(f" {name}", f" {other}", 1)
            k -= 1
    return ". ".join(sentences)


def test_rlaifv_with_the_exact_shapes_labeler_prefers_fewer_wrong_claims(shapes_world, run_cli, tmp_path):
    from align.data.claims import split_claims, yes_no_question
    from align.data.shapes_claims import answer

    rows = []
    for row in _world_rows(shapes_world, 8):
        caption = row["caption"]
        rows.append({"id": row["id"], "images": row["images"], "objects": row["objects"],
                     "question": "Describe the image.", "responses": [caption, _swap(caption, 1), _swap(caption, 2)]})
    source = _write(tmp_path / "sampled.jsonl", rows)
    result = run_cli("build-pairs", "rlaifv", "--input", source, "--out", tmp_path / "out", "--image-root",
                     shapes_world, "labeler=align.data.shapes_claims:labeler", "length_balance=false")
    assert result.code == 0, result
    pairs = read_records(tmp_path / "out")
    objects = {r["id"]: r["objects"] for r in rows}
    per_prompt: dict[str, int] = {}
    for pair in pairs:
        source_id = json.loads(pair["meta"])["source_id"]
        per_prompt[source_id] = per_prompt.get(source_id, 0) + 1

        def wrong(text, truth=objects[source_id]):
            return sum(not answer(yes_no_question(c), truth) for c in split_claims(text))

        chosen, rejected = _text(pair["chosen"]), _text(pair["rejected"])
        assert (pair["chosen_score"], pair["rejected_score"]) == (-wrong(chosen), -wrong(rejected))
        assert pair["chosen_score"] >= pair["rejected_score"] + 1
    assert pairs and max(per_prompt.values()) <= 2  # pairs_per_prompt
    # one-shape images have no second shape to swap: their two swapped captions tie, one pair only
    assert sum(per_prompt.values()) == len(pairs)


def test_rlaifv_counts_a_failing_labeler_and_needs_one(shapes_world, run_cli, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    rows = [{"id": r["id"], "images": r["images"], "responses": [r["caption"], _swap(r["caption"], 1),
                                                                 r["caption"] + " There is a circle."]}
            for r in _world_rows(shapes_world, 6)]
    source = _write(tmp_path / "sampled.jsonl", rows)
    result = run_cli("build-pairs", "rlaifv", "--input", source, "--out", tmp_path / "out", "--image-root",
                     shapes_world, "labeler=feedback_parts:fails_on_circles", "splitter=feedback_parts:whole")
    counts = read_dataset_json(tmp_path / "out")["counts"] if result.code == 0 else {}
    # every response holding "circle" is dropped, counted, never scored as wrong; the rest score 0 alike
    assert result.code == 2 and "made no pairs" in result.err and "labeler failed" in result.err, (result, counts)
    bad = run_cli("build-pairs", "rlaifv", "--input", source, "--out", tmp_path / "out2", "--image-root",
                  shapes_world, "labeler=feedback_parts:says_maybe")
    assert bad.code == 2 and "labeler failed (response dropped)" in bad.err
    missing = run_cli("build-pairs", "rlaifv", "--input", source, "--out", tmp_path / "out3")
    assert missing.code == 2 and "labeler=MODEL" in missing.err


def test_length_balancing_keeps_the_threshold_that_evens_lengths():
    from data_builders.rlaifv import length_balanced

    def pair(chosen_words, rejected_words):
        return {"chosen": [{"role": "assistant", "content": [{"type": "text", "text": "w " * chosen_words}]}],
                "rejected": [{"role": "assistant", "content": [{"type": "text", "text": "w " * rejected_words}]}]}

    pairs = [pair(10, 10), pair(12, 10), pair(5, 10), pair(9, 10)]
    # r=0 keeps (10,10) and (12,10): means 11 vs 10, gap 0.1; r=0.1 adds (9,10): means 10.33 vs 10, gap 0.033;
    # r=0.5 adds (5,10): means 9 vs 10, gap 0.1. The best is r in [0.1, 0.5): (5, 10) is dropped.
    assert length_balanced(pairs) == [pairs[0], pairs[1], pairs[3]]


def test_rlaifv_samples_with_a_model_and_labels_with_a_model(shapes_world, run_cli, tmp_path, tiny_checkpoint,
                                                            monkeypatch):
    """The model paths: k responses sampled from a tiny LLaVA (one call per chunk), and a tiny LLaVA labeler read
    at its first answer token, one question per claim."""
    from align.models.generate import Generator

    calls = {"generate": 0, "questions": 0}
    original_generate, original_logprobs = Generator.generate, Generator.answer_logprobs

    def generate(self, conversations, images=None, **kw):
        calls["generate"] += 1
        assert kw["temperature"] == 0.7 and len(conversations) == 3 * 2  # samples x rows
        return original_generate(self, conversations, images, **kw)

    def logprobs(self, conversations, images, answers):
        calls["questions"] += len(conversations)
        return original_logprobs(self, conversations, images, answers)

    monkeypatch.setattr(Generator, "generate", generate)
    monkeypatch.setattr(Generator, "answer_logprobs", logprobs)
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    rows = [{"id": r["id"], "images": r["images"]} for r in _world_rows(shapes_world, 2)]
    source = _write(tmp_path / "prompts.jsonl", rows)
    model = tiny_checkpoint("llava")
    result = run_cli("build-pairs", "rlaifv", "--input", source, "--out", tmp_path / "out", "--image-root",
                     shapes_world, "--model", model, "samples=3", "max_new_tokens=6", "splitter=feedback_parts:whole",
                     f"labeler={model}")
    assert calls["generate"] == 1 and calls["questions"] == 6  # one claim per sampled response
    # a random tiny labeler may judge every response alike; either way the run ends cleanly
    assert result.code == 0 or (result.code == 2 and "made no pairs" in result.err), result


@pytest.mark.parametrize(("aggregate", "scores"), [("max", {1: 2.5, 2: 2.5}), ("sum", {1: 2.5, 2: 4.0})])
def test_hsa_scores_the_rejected_by_its_judged_severity(aggregate, scores, shapes_world, run_cli, tmp_path,
                                                        monkeypatch):
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    rows, wrong = [], {}
    for k, row in enumerate(_world_rows(shapes_world, 10)):
        n = 1 + k % 2
        original = _swap(row["caption"], n)
        wrong[row["id"]] = sum(a != b for a, b in zip(original.split(". "), row["caption"].split(". "), strict=True))
        rows.append({"id": row["id"], "images": row["images"], "objects": row["objects"], "original": original,
                     "corrected": row["caption"]})
    source = _write(tmp_path / "rows.jsonl", rows)
    result = run_cli("build-pairs", "hsa", "--input", source, "--out", tmp_path / "out", "--image-root",
                     shapes_world, "judge=align.data.shapes_claims:severity", f"aggregate={aggregate}")
    assert result.code == 0, result
    pairs = read_records(tmp_path / "out")
    counts = read_dataset_json(tmp_path / "out")["counts"]
    # a one-shape image has no second sentence to falsify: with n=2 it still has one wrong sentence
    for pair in pairs:
        source_id = json.loads(pair["meta"])["source_id"]
        assert pair["rejected_score"] == scores[wrong[source_id]], (source_id, pair["rejected_score"])
        assert _text(pair["chosen"]) != _text(pair["rejected"])
    assert len(pairs) + counts.get("skipped_judge found no hallucination", 0) == len(rows)


def test_hsa_counts_a_failing_judge_and_needs_one(shapes_world, run_cli, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    row = _world_rows(shapes_world, 1)[0]
    source = _write(tmp_path / "rows.jsonl", [{"id": "a", "images": row["images"], "objects": row["objects"],
                                               "original": _swap(row["caption"], 1), "corrected": row["caption"]}])
    bad = run_cli("build-pairs", "hsa", "--input", source, "--out", tmp_path / "out", "--image-root", shapes_world,
                  "judge=feedback_parts:judges_gibberish")
    assert bad.code == 2 and "judge failed" in bad.err
    missing = run_cli("build-pairs", "hsa", "--input", source, "--out", tmp_path / "out")
    assert missing.code == 2 and "judge=MODEL" in missing.err


def test_hsa_with_a_model_judge_reads_one_level_per_sentence(shapes_world, run_cli, tmp_path, tiny_checkpoint,
                                                              monkeypatch):
    from align.models.generate import Generator

    asked = []
    original = Generator.answer_logprobs

    def logprobs(self, conversations, images, answers):
        asked.append((len(conversations), sorted(answers)))
        return original(self, conversations, images, answers)

    monkeypatch.setattr(Generator, "answer_logprobs", logprobs)
    rows = [{"id": r["id"], "images": r["images"], "original": _swap(r["caption"], 1), "corrected": r["caption"]}
            for r in _world_rows(shapes_world, 2)]
    n_sentences = sum(len(r["original"].split(". ")) for r in rows)
    source = _write(tmp_path / "rows.jsonl", rows)
    result = run_cli("build-pairs", "hsa", "--input", source, "--out", tmp_path / "out", "--image-root",
                     shapes_world, f"judge={tiny_checkpoint('llava')}")
    assert sum(n for n, _ in asked) == n_sentences and asked[0][1] == ["high", "low", "medium", "none"]
    assert result.code == 0 or (result.code == 2 and "made no pairs" in result.err), result
    if result.code == 0:
        assert {p["rejected_score"] for p in read_records(tmp_path / "out")} <= {1.5, 2.0, 2.5}


def _video_rows(world, n_rows=2, n_frames=3):
    rows = _world_rows(world, n_rows * n_frames)
    out = []
    for k in range(n_rows):
        frames = [r["images"][0] for r in rows[k * n_frames:(k + 1) * n_frames]]
        caption = rows[k * n_frames]["caption"]
        out.append({"id": f"video-{k}", "images": [frames], "caption": caption, "question": "What is shown?",
                    "responses": [_swap(caption, 1), caption, _swap(caption, 2)]})
    return out


def test_hound_highest_against_lowest_judged_against_the_caption(shapes_world, run_cli, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    rows = _video_rows(shapes_world)
    source = _write(tmp_path / "videos.jsonl", rows)
    result = run_cli("build-pairs", "hound", "--input", source, "--out", tmp_path / "out", "--image-root",
                     shapes_world, "judge=align.data.shapes_claims:caption_judge")
    assert result.code == 0, result
    pairs = read_records(tmp_path / "out")
    assert len(pairs) == 2
    for pair, row in zip(pairs, rows, strict=True):
        assert _text(pair["chosen"]) == row["caption"]  # every sentence in the caption: the top score
        assert pair["chosen_score"] == 5.0 > pair["rejected_score"]
        assert [i["type"] for i in pair["prompt"][0]["content"]] == ["video", "text"]
        assert len(pair["images"]) == 1 and len(pair["images"][0]) == 3  # one video of three frames
    bad = run_cli("build-pairs", "hound", "--input", source, "--out", tmp_path / "bad", "--image-root",
                  shapes_world, "judge=feedback_parts:scores_text")
    assert bad.code == 2 and "judge failed (response dropped)" in bad.err


def test_hound_samples_a_video_model_and_judges_with_a_model(shapes_world, run_cli, tmp_path, tiny_checkpoint,
                                                            monkeypatch):
    from align.models.generate import Generator

    seen = {"sampled": 0, "judged": 0}
    generate, logprobs = Generator.generate, Generator.answer_logprobs

    def counting_generate(self, conversations, images=None, **kw):
        seen["sampled"] += len(conversations)
        return generate(self, conversations, images, **kw)

    def counting_logprobs(self, conversations, images, answers):
        assert sorted(answers) == ["1", "2", "3", "4", "5"]
        seen["judged"] += len(conversations)
        return logprobs(self, conversations, images, answers)

    monkeypatch.setattr(Generator, "generate", counting_generate)
    monkeypatch.setattr(Generator, "answer_logprobs", counting_logprobs)
    rows = [{k: v for k, v in r.items() if k != "responses"} for r in _video_rows(shapes_world)]
    source = _write(tmp_path / "videos.jsonl", rows)
    result = run_cli("build-pairs", "hound", "--input", source, "--out", tmp_path / "out", "--image-root",
                     shapes_world, "--model", tiny_checkpoint("llava_next_video"), "samples=3", "max_new_tokens=6",
                     f"judge={tiny_checkpoint('llava')}")
    assert seen == {"sampled": 6, "judged": 6}
    assert result.code == 0 or (result.code == 2 and "made no pairs" in result.err), result


def test_rlaifv_splitter_and_questioner_models_are_prompted(shapes_world, run_cli, tmp_path, tiny_checkpoint,
                                                           monkeypatch):
    """splitter=MODEL and questioner=MODEL prompt a local chat model and read its reply (bullet lines, the first
    line ending with a question mark); here the tiny model's replies are replaced to check the reading."""
    from align.models.generate import Generator

    prompts = []

    def generate(self, conversations, images=None, **kw):
        text = conversations[0][0]["content"][-1]["text"]
        prompts.append(text)
        if "### Facts:" in text:
            return ["- There is a red circle.\n- There is a square.\nnot a fact"]
        return ["Sure.\nIs there a red circle?\n"]

    monkeypatch.setattr(Generator, "generate", generate)
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    row = _world_rows(shapes_world, 1)[0]
    source = _write(tmp_path / "rows.jsonl", [{"id": "a", "images": row["images"], "objects": row["objects"],
                                               "responses": ["one", "two"]}])
    model = tiny_checkpoint("llava")
    result = run_cli("build-pairs", "rlaifv", "--input", source, "--out", tmp_path / "out", "--image-root",
                     shapes_world, f"splitter={model}", f"questioner={model}", "labeler=feedback_parts:by_hash")
    splits = [p for p in prompts if "### Facts:" in p]
    asks = [p for p in prompts if "yes/no question" in p]
    assert len(splits) == 2 and "Answer: one" in splits[0]  # one split per response
    assert len(asks) == 4 and "Statement: There is a red circle." in asks[0]  # one question per bullet claim
    assert result.code == 2 and "made no pairs" in result.err  # both responses' claims are the same questions


def _hallucinated(row, k):
    """(the world caption plus an absent partner shape and a miscounted total, the absent class)."""
    from align.data import shapes_vocab
    from align.data.shapes import caption

    present = {o["name"] for o in row["objects"]}
    absent = next(n for n in shapes_vocab.CLASSES[k % 5:] + shapes_vocab.CLASSES if n not in present)
    taken = {o["cell"] for o in row["objects"]}
    cell = next(c for c in shapes_vocab.CELLS if c not in taken)
    extra = {"name": absent, "color": "green", "size": "small", "cell": cell}
    return caption([*row["objects"], extra]), absent


def test_correct_pairs_the_own_response_with_its_exact_correction(shapes_world, run_cli, tmp_path):
    """The shapes corrector removes the absent shape's sentence and fixes the total: the chosen side is the exact
    caption, and the spans mark exactly the changed count and the removed sentence."""
    rows, absent_of = [], {}
    for k, row in enumerate(_world_rows(shapes_world, 8)):
        text, absent_of[row["id"]] = _hallucinated(row, k)
        rows.append({"id": row["id"], "images": row["images"], "objects": row["objects"], "response": text})
    rows.append({**rows[0], "id": "right", "response": _world_rows(shapes_world, 1)[0]["caption"]})
    source = _write(tmp_path / "own.jsonl", rows)
    result = run_cli("build-pairs", "correct", "--input", source, "--out", tmp_path / "out", "--image-root",
                     shapes_world, "corrector=align.data.shapes_corrector:corrector")
    assert result.code == 0, result
    pairs = read_records(tmp_path / "out")
    assert len(pairs) == 8  # the already right response makes no pair
    truth = {r["id"]: r for r in _world_rows(shapes_world, 8)}
    for pair in pairs:
        source_id = json.loads(pair["meta"])["source_id"]
        chosen, rejected = _text(pair["chosen"]), _text(pair["rejected"])
        assert chosen == truth[source_id]["caption"]
        n = len(truth[source_id]["objects"])
        marked_rejected = [rejected[a:b] for a, b in pair["rejected_spans"]]
        marked_chosen = [chosen[a:b] for a, b in pair["chosen_spans"]]
        from align.data.shapes_vocab import NUMBER_WORDS

        # the count on both sides ("two shapes" -> "one shape" changes the noun too), and the removed sentence
        # (naming the absent class) on the rejected side alone
        assert marked_chosen == (["one shape"] if n == 1 else [NUMBER_WORDS[n]])
        assert marked_rejected[0] == ("two shapes" if n == 1 else NUMBER_WORDS[n + 1]) and len(marked_rejected) == 2
        assert absent_of[source_id] in marked_rejected[1] and marked_rejected[1].startswith("There is a")
        assert marked_rejected[1] not in chosen
    counts = read_dataset_json(tmp_path / "out")["counts"]
    assert counts["skipped_nothing to correct"] == 1 and counts["pairs"] == 8, counts


def test_correct_counts_a_failing_corrector_and_needs_responses(shapes_world, run_cli, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    rows = [{"id": r["id"], "images": r["images"], "response": r["caption"]} for r in _world_rows(shapes_world, 3)]
    source = _write(tmp_path / "own.jsonl", rows)
    bad = run_cli("build-pairs", "correct", "--input", source, "--out", tmp_path / "o1", "--image-root",
                  shapes_world, "corrector=feedback_parts:returns_a_number")
    assert bad.code == 2 and "made no pairs" in bad.err and "corrector failed (response dropped)" in bad.err
    none = run_cli("build-pairs", "correct", "--input", source, "--out", tmp_path / "o2")
    assert none.code == 2 and "corrector=MODEL" in none.err
    prompts = _write(tmp_path / "prompts.jsonl", [{"id": r["id"], "images": r["images"]} for r in rows])
    no_model = run_cli("build-pairs", "correct", "--input", prompts, "--out", tmp_path / "o3", "--image-root",
                       shapes_world, "corrector=feedback_parts:adds_a_circle")
    assert no_model.code == 2 and "--model MODEL" in no_model.err


def test_correct_samples_the_policy_and_asks_a_model_corrector(shapes_world, run_cli, tmp_path, tiny_checkpoint,
                                                               monkeypatch):
    """The model paths: `samples` responses per prompt from --model, and a model corrector asked with the
    revision prompt holding the question and each response."""
    from align.models.generate import Generator

    prompts: list[str] = []
    original = Generator.generate

    def generate(self, conversations, images=None, **kw):
        prompts.extend(c[0]["content"][-1]["text"] for c in conversations)
        return original(self, conversations, images, **kw)

    monkeypatch.setattr(Generator, "generate", generate)
    rows = [{"id": r["id"], "images": r["images"]} for r in _world_rows(shapes_world, 2)]
    source = _write(tmp_path / "prompts.jsonl", rows)
    model = tiny_checkpoint("llava")
    result = run_cli("build-pairs", "correct", "--input", source, "--out", tmp_path / "out", "--image-root",
                     shapes_world, "--model", model, "samples=2", "temperature=1.0", "max_new_tokens=6",
                     f"corrector={model}")
    sampled = [p for p in prompts if p == "Describe this image in detail."]
    revisions = [p for p in prompts if p.startswith("Here is a question")]
    assert len(sampled) == 4 and len(revisions) == 4  # 2 rows x 2 samples, each revised once
    assert all("Question: Describe this image in detail.\nAnswer: " in p for p in revisions)
    # a random tiny corrector may return each response unchanged or empty; either way the run ends cleanly
    assert result.code == 0 or (result.code == 2 and "made no pairs" in result.err), result


def test_every_feedback_recipe_runs_from_the_cli(shapes_world, run_cli, tmp_path):
    """Each builder's recipe in recipes/pairs/, with its model judge swapped for the shapes world's exact one."""
    from pathlib import Path

    recipes = Path(__file__).parents[2] / "recipes" / "pairs"
    world = _world_rows(shapes_world, 4)
    inputs = {
        "rlhfv": ([{"id": r["id"], "images": r["images"], "original": _swap(r["caption"], 1),
                    "corrected": r["caption"]} for r in world], []),
        "vlfeedback": ([{"id": r["id"], "images": r["images"], "responses": [r["caption"], _swap(r["caption"], 1)],
                         "ratings": [_ratings(5, 5) | {"Ethical Considerations": 5},
                                     _ratings(4, 2) | {"Ethical Considerations": 5}]} for r in world], []),
        "rlaifv": ([{"id": r["id"], "images": r["images"], "objects": r["objects"],
                     "responses": [r["caption"], _swap(r["caption"], 1)]} for r in world],
                   ["labeler=align.data.shapes_claims:labeler"]),
        "hsa": ([{"id": r["id"], "images": r["images"], "objects": r["objects"], "original": _swap(r["caption"], 1),
                  "corrected": r["caption"]} for r in world], ["judge=align.data.shapes_claims:severity"]),
        "correct": ([{"id": r["id"], "images": r["images"], "objects": r["objects"],
                      "responses": [_swap(r["caption"], 1)]} for r in world],
                    ["corrector=align.data.shapes_corrector:corrector"]),
        "hound": ([{"id": r["id"], "images": [[r["images"][0]] * 2], "caption": r["caption"],
                    "responses": [r["caption"], _swap(r["caption"], 1)]} for r in world],
                  ["judge=align.data.shapes_claims:caption_judge"]),
    }
    for method, (rows, overrides) in inputs.items():
        source = _write(tmp_path / f"{method}.jsonl", rows)
        result = run_cli("build-pairs", method, "--config", recipes / f"{method}.yaml", "--input", source, "--out",
                         tmp_path / method, "--image-root", shapes_world, *overrides)
        assert result.code == 0, (method, result)
        assert read_dataset_json(tmp_path / method)["method"] == method and read_records(tmp_path / method)
