"""CHAIR (align/eval/chair.py): the built-in tokenizer and singularizer, CHAIR's phrase and exclusion rules, the
metrics and the file-level evaluate, on captions and annotation files worked out by hand."""

from __future__ import annotations

import json

import pytest

from align.data.nouns import singularize
from align.errors import ConfigError, DataError
from align.eval.chair import (
    ChairVocab,
    caption_to_objects,
    chair_metrics,
    coco_chair_vocab,
    evaluate,
    image_key,
    load_ground_truth,
    tokenize,
)

COCO = coco_chair_vocab()


def objects(caption, vocab=COCO):
    return caption_to_objects(caption, vocab).objects


# -------------------------------------------------------------------------------- tokens and plurals


def test_tokenize_like_word_tokenize():
    assert tokenize("A man's dog isn't there, \"cannot\" see 1,000 T-shirts... 3.5 dogs.") == [
        "a", "man", "'s", "dog", "is", "n't", "there", ",", '"', "can", "not", '"', "see", "1,000", "t-shirts",
        "...", "3.5", "dogs", "."]
    assert tokenize("a square-shaped box", split_hyphens=True) == ["a", "square", "shaped", "box"]


@pytest.mark.parametrize("plural, singular", [
    ("people", "person"), ("men", "man"), ("women", "woman"), ("children", "child"), ("mice", "mouse"),
    ("knives", "knife"), ("skis", "ski"), ("glasses", "glass"), ("oxen", "ox"), ("policemen", "policeman"),
    ("horses", "horse"), ("buses", "bus"), ("benches", "bench"), ("toothbrushes", "toothbrush"),
    ("ponies", "pony"), ("ties", "tie"), ("collies", "collie"), ("taxis", "taxi"), ("buffaloes", "buffalo"),
    ("bananas", "banana"), ("canoes", "canoe"), ("calves", "calf"), ("houses", "house"), ("dogs", "dog"),
    # singular words the vocabulary knows are never clipped
    ("bus", "bus"), ("tennis", "tennis"), ("sports", "sports"), ("glass", "glass"), ("sheep", "sheep"),
    # nor are short words, "-ss"/"-us"/"-is" words, or "-men" words the vocabulary does not know
    ("has", "has"), ("dress", "dress"), ("cactus", "cactus"), ("this", "this"), ("omen", "omen"),
])
def test_singularize(plural, singular):
    assert singularize(plural, COCO.known, COCO.irregular) == singular


# ------------------------------------------------------------------------------------------ extraction


def test_caption_worked_by_hand():
    """Two men -> person; "toilet seat" -> toilet (no chair); "hot dogs" -> hot dog (no dog); "baby elephant"
    -> elephant (no person for "baby"); "passenger train" -> train (no person); "dining table" is not a phrase,
    but "table" is a dining-table synonym. Without the rules this caption would also name chair, dog and person
    twice more."""
    caption = ("Two men sit on a toilet seat next to hot dogs, a baby elephant and a passenger train near the "
               "dining table.")
    extraction = caption_to_objects(caption, COCO)
    assert extraction.words == ["two", "man", "sit", "on", "a", "toilet", "next", "to", "hot dog", ",", "a",
                                "elephant", "and", "a", "train", "near", "the", "dining", "table", "."]
    assert extraction.objects == ["person", "toilet", "hot dog", "elephant", "train", "dining table"]
    assert [m.position for m in extraction.mentions] == [1, 5, 8, 11, 14, 18]
    assert [m.word for m in extraction.mentions] == ["man", "toilet", "hot dog", "elephant", "train", "table"]


def test_special_rules():
    # toilet anywhere drops every seat; without a toilet, seat is a chair
    assert objects("A toilet with the seat up, and a seat by the door.") == ["toilet"]
    assert objects("A seat by the sink.") == ["chair", "sink"]
    # baby/adult + animal count as the animal; "baby" alone is a person
    assert objects("A baby bird, adult giraffes and a baby.") == ["bird", "giraffe", "person"]
    assert objects("A baby cub.") == []                       # "cub" is no COCO word: the pair hides "baby"
    assert objects("Passengers board passenger jets.") == ["person", "airplane"]
    # non-object phrases hide their words; only pairs merge
    assert objects("The train tracks near home plate.") == []
    assert objects("Wine glasses, tennis rackets and teddy bears.") == ["wine glass", "tennis racket",
                                                                        "teddy bear"]
    assert objects("A stove top oven.") == ["oven", "oven"]   # a 3-word entry never merges
    # repeats are kept
    assert objects("A dog chasing another dog and two puppies.") == ["dog", "dog", "dog"]


def test_reference_exact_quirks():
    exact = coco_chair_vocab(reference_exact=True)
    assert objects("A motor bike, a cheesecake and an iPhone.") == ["motorcycle", "cake", "cell phone"]
    assert objects("A motor bike, a cheesecake and an iPhone.", exact) == []


def test_reference_exact_singularizes_like_pattern_en():
    """The original's pattern.en strips the s of a singular "bus" ("bu", not a synonym) but maps "buses" to "bus";
    "glass" becomes "glas", which the "wine glas" phrase maps back; "scissors" stays."""
    exact = coco_chair_vocab(reference_exact=True)
    text = "A bus, two buses, a minibus, a wine glass and scissors."
    assert objects(text) == ["bus", "bus", "bus", "wine glass", "scissors"]
    assert objects(text, exact) == ["bus", "wine glass", "scissors"]


def test_another_vocabulary():
    """The same pipeline with a shapes-like table: plurals, a two-word phrase, hyphen splitting, a safe word
    that is also a synonym, and an exclusion rule."""
    vocab = ChairVocab(
        synonyms={"circle": "circle", "disc": "circle", "crescent": "crescent", "half moon": "crescent",
                  "moon": "crescent", "square": "square", "shape": "shape"},
        phrases={"half moon": "half moon"},
        exclusions=(("night", "moon"),),
        safe_words=frozenset({"shape"}),
        split_hyphens=True,
    )
    assert objects("Two discs, a half moon, a square-shaped box and a shape.", vocab) == [
        "circle", "crescent", "square"]
    assert objects("A moon at night.", vocab) == []
    from align.data.vocab.shapes import shapes_vocabulary

    shapes = ChairVocab.from_vocabulary(shapes_vocabulary(), split_hyphens=True)
    assert objects("Two ellipses, a half moon, rhombi and a diamond-shaped crosses.", shapes) == [
        "ellipse", "crescent", "diamond", "diamond", "cross"]


# --------------------------------------------------------------------------------------------- metrics


def test_chair_metrics_by_hand():
    """caption 1: dog, cat, cat vs {dog, person}: 2 hallucinated mentions (cat counted twice), recalls dog.
    caption 2: person, person vs {person, car, bus}: none hallucinated, recalls person (once, distinct).
    caption 3: nothing vs {cat}: recalls nothing.
    CHAIR_i = 2 / 5 mentions = .4; CHAIR_s = 1 / 3 captions; Recall = (1 + 1 + 0) / (2 + 3 + 1) = 1/3;
    Len = (10 + 6 + 5) / 3 = 7; CHAIRs_refine = 1 / 2 captions with a mention."""
    m = chair_metrics([["dog", "cat", "cat"], ["person", "person"], []],
                      [{"dog", "person"}, {"person", "car", "bus"}, {"cat"}], [10, 6, 5])
    assert m["chair_i"] == pytest.approx(0.4)
    assert m["chair_s"] == pytest.approx(1 / 3)
    assert m["recall"] == pytest.approx(1 / 3)
    assert m["len"] == pytest.approx(7.0)
    assert m["chair_s_refine"] == pytest.approx(0.5)
    assert (m["mentions"], m["hallucinated_mentions"], m["hallucinated_captions"]) == (5, 2, 1)
    assert chair_metrics([], []) == pytest.approx({k: 0 for k in m})


# -------------------------------------------------------------------------------------------- evaluate


def write_json(path, data):
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def coco(tmp_path):
    """Images 1-3. Instances: 1 dog; 2 person, car; 3 none. Captions: 1 "A puppy ... a man." (dog, person);
    2 "A car ..." (car); 3 "A toilet seat ..." (toilet). Ground truth: 1 {dog, person}, 2 {person, car},
    3 {toilet}."""
    images = [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg"} for i in (1, 2, 3)]
    instances = write_json(tmp_path / "instances.json", {
        "images": images,
        "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}],
        "annotations": [{"id": 10, "image_id": 1, "category_id": 18}, {"id": 11, "image_id": 2, "category_id": 1},
                        {"id": 12, "image_id": 2, "category_id": 3}],
    })
    captions = write_json(tmp_path / "captions.json", {
        "images": images,
        "annotations": [{"id": 20, "image_id": 1, "caption": "A puppy sitting next to a man."},
                        {"id": 21, "image_id": 2, "caption": "A car on the street."},
                        {"id": 22, "image_id": 3, "caption": "A toilet seat in a bathroom."}],
    })
    return str(instances), str(captions)


ANSWERS = [
    {"image_id": 1, "caption": "Two dogs and a cat."},                 # 6 tokens: dog, cat (hallucinated)
    {"image_id": 2, "caption": "A woman rides a bike near a car."},    # 9 tokens: person, bicycle (halluc.), car
    {"image_id": 3, "caption": "A toilet with the seat up."},          # 7 tokens: toilet (seat dropped)
]


def test_ground_truth_is_union_of_instances_and_captions(coco):
    instances, captions = coco
    assert load_ground_truth([instances], [captions]) == {1: {"dog", "person"}, 2: {"person", "car"},
                                                          3: {"toilet"}}
    assert load_ground_truth([instances], []) == {1: {"dog"}, 2: {"person", "car"}, 3: set()}


def test_evaluate_by_hand(tmp_path, coco):
    """6 mentions, 2 hallucinated (cat, bicycle) -> CHAIR_i 1/3; captions 1 and 2 hallucinate -> CHAIR_s 2/3;
    recall (1 of {dog, person}) + (2 of {person, car}) + (1 of {toilet}) = 4 / 5; Len (6 + 9 + 7) / 3."""
    instances, captions = coco
    answers = write_jsonl(tmp_path / "captions.jsonl", ANSWERS)
    result = evaluate(answers, instances=instances, captions=captions)
    assert result.metrics == pytest.approx({"chair_i": 1 / 3, "chair_s": 2 / 3, "recall": 0.8, "len": 22 / 3})
    assert result.counts["mentions"] == 6 and result.counts["hallucinated_mentions"] == 2
    assert result.benchmark == "chair"


def test_evaluate_instances_only(tmp_path, coco):
    """Without captions image 3's truth is empty: toilet is hallucinated too -> CHAIR_i 3/6, CHAIR_s 1,
    recall (1 + 2 + 0) / (1 + 2 + 0) = 1; a note says the ground truth is partial."""
    instances, _ = coco
    answers = write_jsonl(tmp_path / "captions.jsonl", ANSWERS)
    result = evaluate(answers, instances=instances)
    assert result.metrics["chair_i"] == pytest.approx(0.5)
    assert result.metrics["chair_s"] == pytest.approx(1.0)
    assert result.metrics["recall"] == pytest.approx(1.0)
    assert any("instances only" in note for note in result.notes)


def test_evaluate_with_question_file(tmp_path, coco):
    """LLaVA-style answers {question_id, text} take their image from the question file (id or file name)."""
    instances, captions = coco
    questions = write_jsonl(tmp_path / "q.jsonl", [
        {"question_id": "q1", "image_id": 1}, {"question_id": "q2", "image": "COCO_val2014_000000000002.jpg"},
        {"question_id": "q3", "image": "COCO_val2014_000000000003.jpg"}])
    answers = write_jsonl(tmp_path / "a.jsonl", [{"question_id": f"q{n}", "text": row["caption"]}
                                                 for n, row in enumerate(ANSWERS, start=1)])
    result = evaluate(answers, questions, instances=instances, captions=captions)
    assert result.metrics["chair_i"] == pytest.approx(1 / 3)
    partial = write_jsonl(tmp_path / "partial.jsonl", [{"question_id": "q1", "text": "A dog."}])
    with pytest.raises(DataError, match="no answer for id 'q2'"):
        evaluate(partial, questions, instances=instances, captions=captions)


def test_image_key():
    assert image_key(42) == 42 and image_key("42") == 42
    assert image_key("COCO_val2014_000000000042.jpg") == 42
    assert image_key("shapes_a.png") == "shapes_a.png"


def test_evaluate_bad_input(tmp_path, coco):
    instances, captions = coco
    unknown = write_jsonl(tmp_path / "unknown.jsonl", [*ANSWERS, {"image_id": 999, "caption": "A dog."}])
    with pytest.raises(DataError, match="image_id 999"):
        evaluate(unknown, instances=instances, captions=captions)
    twice = write_jsonl(tmp_path / "twice.jsonl", [*ANSWERS, {"image_id": 2, "caption": "A dog."}])
    with pytest.raises(DataError, match="image_id 2 appears twice"):
        evaluate(twice, instances=instances, captions=captions)
    spelled_twice = write_jsonl(tmp_path / "spelled.jsonl", [*ANSWERS, {"image_id": "2", "caption": "A dog."}])
    with pytest.raises(DataError, match="image_id 2 appears twice"):
        evaluate(spelled_twice, instances=instances, captions=captions)
    with pytest.raises(ConfigError, match="instances="):
        evaluate(write_jsonl(tmp_path / "a.jsonl", ANSWERS))
    odd = write_json(tmp_path / "odd.json", {"images": [{"id": 1}], "categories": [{"id": 5, "name": "unicorn"}],
                                             "annotations": [{"id": 1, "image_id": 1, "category_id": 5}]})
    with pytest.raises(DataError, match="'unicorn'"):
        evaluate(write_jsonl(tmp_path / "b.jsonl", ANSWERS[:1]), instances=str(odd))
