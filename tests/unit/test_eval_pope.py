"""POPE (align/eval/pope.py): the reference parser, the metrics, the question builder and the file-level evaluate,
on tiny fixtures whose expected numbers are worked out by hand in each test."""

from __future__ import annotations

import json

import pytest

from align.errors import ConfigError, DataError
from align.eval.pope import (
    build_questions,
    evaluate,
    load_coco_objects,
    make_question,
    parse_reference,
    parse_strict,
    pope_metrics,
)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------ metrics

BALANCED = ["yes", "no"] * 4


def test_always_yes():
    """4 yes + 4 no labels, all answered yes: tp=4 fp=4 -> acc .5, precision .5, recall 1, f1 2/3, yes_ratio 1."""
    m = pope_metrics(["yes"] * 8, BALANCED)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (4, 4, 0, 0)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(1.0)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["yes_ratio"] == pytest.approx(1.0)


def test_always_no_does_not_divide_by_zero():
    """All answered no: tn=4 fn=4, no predicted positive -> precision guarded to 0, recall 0, f1 0, acc .5."""
    m = pope_metrics(["no"] * 8, BALANCED)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (0, 0, 4, 4)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0
    assert m["yes_ratio"] == 0.0


def test_mixed_predictions():
    """preds y y n n y vs labels y n y n y: tp=2 (1st, 5th) fp=1 fn=1 tn=1 -> acc 3/5, p=r=f1=2/3, yes 3/5."""
    m = pope_metrics(["yes", "yes", "no", "no", "yes"], ["yes", "no", "yes", "no", "yes"])
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (2, 1, 1, 1)
    assert m["accuracy"] == pytest.approx(0.6)
    assert m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(2 / 3)
    assert m["yes_ratio"] == pytest.approx(0.6)


def test_unknown_predictions_are_never_correct():
    """unknown on a yes label is a miss (fn), on a no label neither tn nor fp: tp=1 tn=1 fn=1 of 4 -> acc .5,
    precision 1/1, recall 1/2."""
    m = pope_metrics(["unknown", "unknown", "yes", "no"], ["yes", "no", "yes", "no"])
    assert (m["tp"], m["fp"], m["tn"], m["fn"], m["unknown"]) == (1, 0, 1, 1, 2)
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx(1.0)
    assert m["recall"] == pytest.approx(0.5)
    assert m["yes_ratio"] == pytest.approx(0.25)


def test_metrics_reject_bad_values():
    with pytest.raises(ValueError, match="maybe"):
        pope_metrics(["yes"], ["maybe"])
    with pytest.raises(ValueError):
        pope_metrics(["yes", "no"], ["yes"])


# ------------------------------------------------------------------------------------------ parsers


@pytest.mark.parametrize("text, expected", [
    ("Yes, but not clear.", "no"),          # "not" before the first period
    ("Yes, although it is not clear", "no"),
    ("No.", "no"),
    ("There is no dog", "no"),
    ("not sure", "no"),
    ("No, there is not.", "no"),
    ("no,", "no"),                          # the comma is removed before splitting
    (" No", "no"),                          # "" then "No"
    ("", "yes"),                            # the default
    ("YES", "yes"),
    ("NO", "yes"),                          # case-sensitive: only "No"/"no"
    ("Nope", "yes"),
    ("No\nThere is none", "yes"),           # split on spaces only: "No\nThere" is one word
    ("Yes there is. No other dog", "yes"),  # only the first sentence is read
    ("Yes. Not a single no.", "yes"),
    ("I cannot tell", "yes"),
    ("Is it not?", "yes"),                  # "not?" is not the word "not"
])
def test_reference_parser(text, expected):
    assert parse_reference(text) == expected


@pytest.mark.parametrize("text, expected", [
    ("Yes, but not clear.", "yes"),
    ("No.", "no"),
    ("There is no dog", "unknown"),
    ("not sure", "unknown"),
    ("", "unknown"),
    ("YES", "yes"),
    ("Yes there is. No other dog", "yes"),
    ("**No**", "no"),
    ('  "yes"', "yes"),
    ("No\nThere is none", "no"),
    ("Yesterday", "unknown"),
    ("Nope", "unknown"),
    ("1. yes", "unknown"),
])
def test_strict_parser(text, expected):
    assert parse_strict(text) == expected


# ---------------------------------------------------------------------------------------- builder

# Chosen images (img6 has 2 objects, fewer than 3, so it is left out). Over img1..img5:
#   popularity: person 3, dog 2, car 2, cat 2, remote 2, frisbee 1, bus 1, couch 1, tv 1 (ties in first-seen order)
#   co-occurrence: person -> dog 2, car 2, frisbee 1, bus 1;  cat -> remote 2, couch 1, tv 1
OBJECTS = {
    "img1": ["person", "dog", "car"],
    "img2": ["person", "dog", "frisbee"],
    "img3": ["person", "car", "bus"],
    "img4": ["cat", "couch", "remote"],
    "img5": ["cat", "tv", "remote"],
    "img6": ["person", "dog"],
}


def by_image(rows):
    out = {}
    for row in rows:
        out.setdefault(row["image"], []).append(row)
    return out


@pytest.mark.parametrize("strategy", ["random", "popular", "adversarial"])
def test_builder_rules(strategy):
    rows = build_questions(OBJECTS, strategy, seed=3)
    assert [row["question_id"] for row in rows] == list(range(1, 31))
    assert set(by_image(rows)) == {"img1", "img2", "img3", "img4", "img5"}
    seen = {obj for image, objects in OBJECTS.items() if image != "img6" for obj in objects}
    for image, questions in by_image(rows).items():
        assert [q["label"] for q in questions] == ["yes", "no"] * 3
        positives = [q["target"] for q in questions if q["label"] == "yes"]
        negatives = [q["target"] for q in questions if q["label"] == "no"]
        assert positives == OBJECTS[image]                      # the first 3, in annotation order
        assert not set(negatives) & set(OBJECTS[image])         # never present
        assert len(set(negatives)) == 3                         # never repeated within the image
        assert set(negatives) <= seen
        assert all(q["category"] == strategy for q in questions)
        assert questions[0]["text"] == f"Is there a {positives[0]} in the image?"


def test_popular_walks_global_frequency():
    """img1 (person, dog, car): person -> first absent by popularity is cat; dog -> remote (cat now asked);
    car -> frisbee. img4 (cat, couch, remote): person, dog, car."""
    rows = by_image(build_questions(OBJECTS, "popular"))
    assert [q["target"] for q in rows["img1"] if q["label"] == "no"] == ["cat", "remote", "frisbee"]
    assert [q["target"] for q in rows["img4"] if q["label"] == "no"] == ["person", "dog", "car"]


def test_adversarial_takes_top_cooccurring_absent_class():
    """img1: person co-occurs most with dog and car (both present), then frisbee -> frisbee (popular says cat).
    img4: cat co-occurs most with remote, then couch (both present), then tv -> tv (popular says person).
    img2: person -> dog is present, car (2) is absent -> car."""
    rows = by_image(build_questions(OBJECTS, "adversarial"))
    assert rows["img1"][1]["target"] == "frisbee"
    assert rows["img4"][1]["target"] == "tv"
    assert rows["img2"][1]["target"] == "car"
    # couch co-occurs only with cat and remote (present): random fallback, still valid.
    assert rows["img4"][3]["target"] not in {"cat", "couch", "remote", "tv"}


def test_builder_is_deterministic_by_seed():
    first = build_questions(OBJECTS, "random", seed=0)
    assert build_questions(OBJECTS, "random", seed=0) == first
    assert any(build_questions(OBJECTS, "random", seed=s) != first for s in range(1, 10))
    sampled = build_questions(OBJECTS, "popular", seed=5, num_images=2)
    assert len(sampled) == 12 and sampled == build_questions(OBJECTS, "popular", seed=5, num_images=2)
    assert set(by_image(sampled)) < {"img1", "img2", "img3", "img4", "img5"}


def test_builder_options_and_errors():
    rows = build_questions(OBJECTS, "popular", min_objects=1)
    assert [q["target"] for q in by_image(rows)["img6"] if q["label"] == "yes"] == ["person", "dog"]
    with pytest.raises(DataError, match="'solo'"):
        build_questions({"solo": ["a", "b", "c"]}, "popular")  # no absent object to ask about
    with pytest.raises(ConfigError, match="strategy"):
        build_questions(OBJECTS, "hardest")


def test_question_article():
    assert make_question("umbrella") == "Is there an umbrella in the image?"
    assert make_question("dog") == "Is there a dog in the image?"
    assert make_question("skis") == "Is there a skis in the image?"  # raw names, as released


def coco_instances(tmp_path, annotations, images=(42, 7, 9)):
    data = {
        "images": [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg"} for i in images],
        "categories": [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}, {"id": 3, "name": "car"}],
        "annotations": [{"id": 100 + n, "image_id": image, "category_id": cat}
                        for n, (image, cat) in enumerate(annotations)],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def test_load_coco_objects(tmp_path):
    path = coco_instances(tmp_path, [(42, 18), (42, 1), (42, 18), (7, 3)])
    assert load_coco_objects(path) == {42: ["dog", "person"], 7: ["car"], 9: []}
    by_name = load_coco_objects(path, key="file_name")
    assert by_name["COCO_val2014_000000000042.jpg"] == ["dog", "person"]


def test_load_coco_objects_errors(tmp_path):
    with pytest.raises(DataError, match="category_id 99"):
        load_coco_objects(coco_instances(tmp_path, [(42, 1), (7, 99)]))
    with pytest.raises(DataError, match="image_id 5"):
        load_coco_objects(coco_instances(tmp_path, [(5, 1)]))
    path = tmp_path / "broken.json"
    path.write_text(json.dumps({"images": [{"id": 1}], "categories": [{"id": 1, "name": "dog"}],
                                "annotations": [{"id": 777, "category_id": 1}]}), encoding="utf-8")
    with pytest.raises(DataError, match="annotation 777 has no image_id"):
        load_coco_objects(path)


# --------------------------------------------------------------------------------------- evaluate

QUESTIONS = [
    {"question_id": 1, "image": "a.jpg", "text": "Is there a dog in the image?", "label": "yes", "category": "random"},
    {"question_id": 2, "image": "a.jpg", "text": "Is there a cat in the image?", "label": "no", "category": "random"},
    {"question_id": 3, "image": "b.jpg", "text": "Is there a cat in the image?", "label": "yes", "category": "random"},
    {"question_id": 4, "image": "b.jpg", "text": "Is there a car in the image?", "label": "no", "category": "random"},
    {"question_id": 5, "image": "c.jpg", "text": "Is there a bus in the image?", "label": "yes",
     "category": "popular"},
    {"question_id": 6, "image": "c.jpg", "text": "Is there a tv in the image?", "label": "no", "category": "popular"},
]
ANSWERS = {1: "Yes", 2: "No.", 3: "There is no cat.", 4: "I think so", 5: "Yes, it is.", 6: "Yes"}


def files(tmp_path, answers=ANSWERS, questions=QUESTIONS, name="llava_pope_test.jsonl"):
    q = write_jsonl(tmp_path / name, questions)
    a = write_jsonl(tmp_path / "answers.jsonl", [{"question_id": k, "text": v} for k, v in answers.items()])
    return a, q


def test_evaluate_groups_and_overall(tmp_path):
    """Reference parse: 1 yes, 2 no, 3 no ("no" in it), 4 yes (the default), 5 yes, 6 yes.
    random (labels y n y n, preds y n n y): tp=1 tn=1 fn=1 fp=1 -> acc .5, p .5, r .5, f1 .5, yes .5;
        strict parser: 3 and 4 are unknown -> unknown_rate .5.
    popular (labels y n, preds y y): tp=1 fp=1 -> acc .5, p .5, r 1, f1 2/3, yes 1, unknown 0.
    overall: tp=2 tn=1 fn=1 fp=2 -> acc 3/6, p 2/4, r 2/3, f1 = 2(.5)(2/3)/(.5+2/3) = 4/7, yes 4/6, unknown 2/6;
    mean_f1 = (.5 + 2/3) / 2 = 7/12."""
    result = evaluate(*files(tmp_path))
    random_, popular = result.groups["random"], result.groups["popular"]
    assert random_ == pytest.approx({"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5,
                                     "yes_ratio": 0.5, "unknown_rate": 0.5})
    assert popular == pytest.approx({"accuracy": 0.5, "precision": 0.5, "recall": 1.0, "f1": 2 / 3,
                                     "yes_ratio": 1.0, "unknown_rate": 0.0})
    m = result.metrics
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["precision"] == pytest.approx(0.5)
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["f1"] == pytest.approx(4 / 7)
    assert m["yes_ratio"] == pytest.approx(4 / 6)
    assert m["unknown_rate"] == pytest.approx(2 / 6)
    assert m["mean_f1"] == pytest.approx(7 / 12)
    assert result.counts["questions"] == 6 and result.counts["tp"] == 2 and result.counts["fp"] == 2
    assert result.benchmark == "pope"


def test_evaluate_strict_parser(tmp_path):
    """Strict: random preds y n unknown unknown vs y n y n -> tp=1 tn=1 fn=1 -> acc .5, p 1, r .5."""
    result = evaluate(*files(tmp_path), parser="strict")
    assert result.groups["random"]["accuracy"] == pytest.approx(0.5)
    assert result.groups["random"]["precision"] == pytest.approx(1.0)
    assert result.groups["random"]["recall"] == pytest.approx(0.5)
    assert result.groups["random"]["yes_ratio"] == pytest.approx(0.25)


def test_evaluate_always_yes_and_always_no(tmp_path):
    always_yes = evaluate(*files(tmp_path, answers={k: "Yes" for k in ANSWERS}))
    assert always_yes.metrics["f1"] == pytest.approx(2 / 3)
    assert always_yes.metrics["yes_ratio"] == 1.0
    always_no = evaluate(*files(tmp_path, answers={k: "No" for k in ANSWERS}))
    assert always_no.metrics["accuracy"] == pytest.approx(0.5)
    assert always_no.metrics["f1"] == 0.0 and always_no.metrics["precision"] == 0.0


def test_evaluate_pope_json_lines_file_and_category_from_name(tmp_path):
    """POPE's own files are JSON Lines named .json, without a category: the split comes from the file name."""
    questions = [{k: v for k, v in q.items() if k != "category"} for q in QUESTIONS]
    result = evaluate(*files(tmp_path, questions=questions, name="coco_pope_adversarial.json"))
    assert list(result.groups) == ["adversarial"]
    assert result.metrics["accuracy"] == pytest.approx(0.5)


def test_evaluate_match_by_position(tmp_path):
    q = write_jsonl(tmp_path / "q.jsonl", QUESTIONS)
    a = write_jsonl(tmp_path / "a.jsonl", [{"question": "?", "answer": ANSWERS[k]} for k in range(1, 7)])
    assert evaluate(a, q, match="position").metrics["f1"] == pytest.approx(4 / 7)
    short = write_jsonl(tmp_path / "short.jsonl", [{"answer": "Yes"}])
    with pytest.raises(DataError, match="1 answers for 6 questions"):
        evaluate(short, q, match="position")


def test_evaluate_bad_input(tmp_path):
    missing = {k: v for k, v in ANSWERS.items() if k != 6}
    with pytest.raises(DataError, match="no answer for id 6"):
        evaluate(*files(tmp_path, answers=missing))
    a, q = files(tmp_path)
    with a.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"question_id": 2, "text": "Yes"}) + "\n")
    with pytest.raises(DataError, match="question_id 2 appears twice"):
        evaluate(a, q)
    with pytest.raises(DataError, match="id 99 is not a question"):
        evaluate(*files(tmp_path, answers={**ANSWERS, 99: "Yes"}))
    bad_label = [dict(QUESTIONS[0], label="maybe"), *QUESTIONS[1:]]
    with pytest.raises(DataError, match="question_id 1: label must be yes or no"):
        evaluate(*files(tmp_path, questions=bad_label))
    with pytest.raises(ConfigError, match="question file"):
        evaluate(files(tmp_path)[0])
    with pytest.raises(ConfigError, match="parser"):
        evaluate(*files(tmp_path), parser="lenient")
