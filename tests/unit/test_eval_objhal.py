"""ObjHal-rule (align/eval/objhal.py): Object HalBench's response- and mention-level rates on three hand-made
responses, with ground truth from a JSONL object list and from tiny COCO annotation files, plus input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.errors import ConfigError, DataError
from align.eval.objhal import Response, extract_objects, objhal_metrics
from align.eval.objhal import evaluate as evaluate_objhal


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# Image 1 holds a dog and a person, image 2 a car, image 3 a cat and a dining table.
TRUTH_ROWS = [{"image_id": 1, "objects": ["dog", "person"]}, {"image_id": 2, "objects": ["cars"]},
              {"image_id": 3, "objects": ["cat", "dining table"]}]
RESPONSES = [
    {"image_id": 1, "text": "A man walks a dog. The dog chases a cat."},  # person, dog, dog, cat (cat wrong)
    {"image_id": 2, "text": "Assistant: An empty street at night."},  # no COCO object
    {"image_id": 3, "text": "Two cats sit on the table."},  # cat, dining table (both right)
]


@pytest.fixture
def truth(tmp_path) -> Path:
    return write_jsonl(tmp_path / "truth.jsonl", TRUTH_ROWS)


@pytest.fixture
def answers(tmp_path) -> Path:
    return write_jsonl(tmp_path / "answers.jsonl", RESPONSES)


def test_extraction_of_the_three_responses():
    assert extract_objects(RESPONSES[0]["text"]) == ["person", "dog", "dog", "cat"]
    assert extract_objects(RESPONSES[1]["text"]) == []
    assert extract_objects(RESPONSES[2]["text"]) == ["cat", "dining table"]
    # RLAIF-V's refined synonyms and its two-word table of multi-word synonyms
    assert extract_objects("A coffee table, a remote control and my brother.") == ["dining table", "remote",
                                                                                   "person"]


def test_resp_and_ment_on_three_responses(answers, truth):
    """Response 1 mentions person, dog, dog, cat (cat is not in image 1), response 2 nothing, response 3 cat and
    dining table (both in image 3).
    resp = hallucinating responses / responses with an object = 1/2 = 50; chair_s = 1/3 = 33.33 (all responses);
    ment = hallucinated mentions / mentions = 1/(4+0+2) = 16.67 (the repeated dog counts twice);
    obj_rec = distinct right categories / truth categories = (2+0+2)/(2+1+2) = 80;
    correct_rate = 100 - 50 = 50; object_correct_rate = 100 - 16.67 = 83.33;
    avg_word_len = (10 + 5 + 6)/3 = 7 ("Assistant:" removed from response 2 first)."""
    result = evaluate_objhal(answers, ground_truth=str(truth))
    assert result.benchmark == "ObjHal-rule"
    assert result.metrics == pytest.approx({"resp": 50.0, "ment": 100 / 6, "chair_s": 100 / 3, "obj_rec": 80.0,
                                            "correct_rate": 50.0, "object_correct_rate": 100 - 100 / 6,
                                            "avg_word_len": 7.0})
    assert result.counts == {"responses": 3, "images": 3, "responses_with_objects": 2, "hallucinated_responses": 1,
                             "mentions": 6, "hallucinated_mentions": 1}
    assert any("not by GPT" in note and "not comparable" in note for note in result.notes)


def test_unique_mentions_counts_each_category_once_per_response(answers, truth):
    """unique_mentions=true: response 1 mentions person, dog, cat once each -> ment = 1/(3+2) = 20; resp is
    unchanged (50)."""
    result = evaluate_objhal(answers, ground_truth=str(truth), unique_mentions="true")
    assert result.metrics["ment"] == pytest.approx(20.0)
    assert result.metrics["resp"] == pytest.approx(50.0)


def test_metrics_function_directly():
    """Two responses: ("dog", "cat") on truth {dog} and ("car",) on truth {car}: resp = 1/2 = 50,
    ment = 1/3 = 33.33, obj_rec = (1+1)/(1+1) = 100, avg_word_len = (4+2)/2 = 3."""
    responses = [Response(("dog", "cat"), frozenset({"dog"}), 4), Response(("car",), frozenset({"car"}), 2)]
    scores = objhal_metrics(responses)
    assert scores["resp"] == pytest.approx(50.0)
    assert scores["ment"] == pytest.approx(100 / 3)
    assert scores["obj_rec"] == pytest.approx(100.0)
    assert scores["avg_word_len"] == pytest.approx(3.0)


def test_coco_annotation_files_give_the_same_truth(tmp_path, answers):
    """instances: image 1 has a dog and a person, image 2 a car, image 3 is listed without annotations; captions:
    image 3's reference caption "A cat on a dining table." adds cat and dining table. The truth equals
    TRUTH_ROWS, so the figures are those of the JSONL case (resp 50, ment 16.67)."""
    instances = write_json(tmp_path / "instances_val2014.json", {
        "images": [{"id": 1}, {"id": 2}, {"id": 3}],
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}],
        "annotations": [{"id": 10, "image_id": 1, "category_id": 18}, {"id": 11, "image_id": 1, "category_id": 1},
                        {"id": 12, "image_id": 2, "category_id": 3}],
    })
    captions = write_json(tmp_path / "captions_val2014.json", {
        "images": [{"id": 3}], "annotations": [{"id": 20, "image_id": 3, "caption": "A cat on a dining table."}],
    })
    result = evaluate_objhal(answers, instances=str(instances), captions=str(captions))
    assert result.metrics["resp"] == pytest.approx(50.0)
    assert result.metrics["ment"] == pytest.approx(100 / 6)
    assert result.metrics["obj_rec"] == pytest.approx(80.0)
    # instances alone: image 3 has no objects, so response 3's cat and table are hallucinated too
    alone = evaluate_objhal(answers, instances=str(instances))
    assert alone.metrics["resp"] == pytest.approx(100.0)  # 2 of 2 responses with objects
    assert alone.metrics["ment"] == pytest.approx(50.0)  # 3 of 6 mentions


def test_questions_file_and_row_order(tmp_path, truth):
    """With a questions file the question's image_id (or a COCO file name in `image`) names the image; answers
    without ids pair with the questions by row order. Same three responses -> resp 50."""
    questions = write_jsonl(tmp_path / "questions.jsonl", [
        {"question_id": "q1", "image_id": 1, "text": "Describe the image."},
        {"question_id": "q2", "image": "COCO_val2014_000000000002.jpg", "text": "Describe the image."},
        {"question_id": "q3", "image_id": "3", "text": "Describe the image."},
    ])
    keyed = write_jsonl(tmp_path / "keyed.jsonl", [{"question_id": f"q{i}", "answer": r["text"]}
                                                   for i, r in enumerate(RESPONSES, start=1)])
    assert evaluate_objhal(keyed, questions, ground_truth=str(truth)).metrics["resp"] == pytest.approx(50.0)
    bare = write_jsonl(tmp_path / "bare.jsonl", [{"answer": r["text"]} for r in RESPONSES])
    assert evaluate_objhal(bare, questions, ground_truth=str(truth)).metrics["ment"] == pytest.approx(100 / 6)
    short = write_jsonl(tmp_path / "short.jsonl", [{"answer": r["text"]} for r in RESPONSES[:2]])
    with pytest.raises(DataError, match="2 answers without ids for 3 questions"):
        evaluate_objhal(short, questions, ground_truth=str(truth))
    missing = write_jsonl(tmp_path / "missing.jsonl", [{"question_id": "q1", "answer": "A dog."},
                                                       {"question_id": "q3", "answer": "A cat."}])
    with pytest.raises(DataError, match="no answer for id 'q2'"):
        evaluate_objhal(missing, questions, ground_truth=str(truth))


def test_image_without_ground_truth_names_the_id(tmp_path, truth):
    answers = write_jsonl(tmp_path / "answers.jsonl", [*RESPONSES, {"image_id": 404, "text": "A dog."}])
    with pytest.raises(DataError, match="image 404 has no ground truth"):
        evaluate_objhal(answers, ground_truth=str(truth))


def test_duplicate_answer_id_names_the_id(tmp_path, truth):
    answers = write_jsonl(tmp_path / "answers.jsonl", [*RESPONSES, {"image_id": 3, "text": "A cat."}])
    with pytest.raises(DataError, match="image_id 3 appears twice"):
        evaluate_objhal(answers, ground_truth=str(truth))


def test_unknown_truth_object_names_the_image(tmp_path, answers):
    truth = write_jsonl(tmp_path / "truth.jsonl", [*TRUTH_ROWS[:2], {"image_id": 3, "objects": ["unicorn"]}])
    with pytest.raises(DataError, match="image 3: 'unicorn' is not a COCO category"):
        evaluate_objhal(answers, ground_truth=str(truth))


def test_option_errors(tmp_path, answers, truth):
    with pytest.raises(ConfigError, match="needs ground truth"):
        evaluate_objhal(answers)
    with pytest.raises(ConfigError, match="option instances: no such file"):
        evaluate_objhal(answers, instances=str(tmp_path / "absent.json"))
    with pytest.raises(ConfigError, match="has no option 'use_gpt'"):
        evaluate_objhal(answers, ground_truth=str(truth), use_gpt="true")
