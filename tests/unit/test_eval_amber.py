"""AMBER (align/eval/amber.py): discriminative metrics with "No" as the positive class and generative CHAIR,
Cover, Hal, Cog in the exact-match mode, each worked out by hand on tiny annotation files, plus input errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from align.errors import ConfigError, DataError
from align.eval.amber import (
    discriminative_metrics,
    extract_nouns,
    generative_metrics,
    lemmatize_noun,
    object_vocabulary,
    parse_answer,
    score_response,
)
from align.eval.amber import evaluate as evaluate_amber


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def disc(qid: int, kind: str, truth: str) -> dict:
    return {"id": qid, "type": kind, "truth": truth}


# Truth yes: 13, 15, 17 (3); truth no: 11, 12, 14, 16, 18 (5).
DISCRIMINATIVE = [
    disc(11, "discriminative-hallucination", "no"), disc(12, "discriminative-hallucination", "no"),
    disc(13, "discriminative-attribute-state", "yes"), disc(14, "discriminative-attribute-state", "no"),
    disc(15, "discriminative-attribute-number", "yes"), disc(16, "discriminative-attribute-action", "no"),
    disc(17, "discriminative-relation", "yes"), disc(18, "relation", "no"),
]
GENERATIVE = [
    {"id": 1, "type": "generative", "truth": ["dog", "grass", "tree"], "hallu": ["cat", "frisbee"]},
    {"id": 2, "type": "generative", "truth": ["person", "car"], "hallu": ["bench", "dog"]},
    {"id": 3, "type": "generative", "truth": ["ground"], "hallu": ["tree"]},
]
RELATION = {"dog": ["puppy"], "grass": ["ground"], "ground": [], "cat": ["kitten"], "car": [], "tree": [],
            "frisbee": [], "person": ["man", "woman"], "light": [], "bench": []}
DESCRIPTIONS = {
    1: "A puppy plays on the ground near a cat and a light. The dog runs.",
    2: "Two men stand by the cars. Dogs sleep.",
    3: "A kitten sits in a tree on the ground.",
}


def answers_file(tmp_path: Path, responses: dict[int, str]) -> Path:
    return write_json(tmp_path / "answers.json", [{"id": k, "response": v} for k, v in responses.items()])


@pytest.fixture
def disc_questions(tmp_path) -> Path:
    return write_json(tmp_path / "annotations.json", DISCRIMINATIVE)


@pytest.fixture
def all_questions(tmp_path) -> Path:
    return write_json(tmp_path / "annotations_all.json", GENERATIVE + DISCRIMINATIVE)


@pytest.fixture
def relation(tmp_path) -> Path:
    return write_json(tmp_path / "relation.json", RELATION)


# ------------------------------------------------------------------------------------------ discriminative


def test_always_yes_answerer_has_zero_precision_recall_f1(tmp_path, disc_questions):
    """"Yes" to all 8: right on the 3 truth-yes questions, accuracy 3/8 = 37.5. Positive = "No": never answered,
    so precision = 0 (empty denominator), recall = 0/5 = 0, F1 = 0."""
    result = evaluate_amber(answers_file(tmp_path, {q["id"]: "Yes" for q in DISCRIMINATIVE}), disc_questions)
    assert result.metrics == pytest.approx({"accuracy": 37.5, "precision": 0.0, "recall": 0.0, "f1": 0.0})
    assert result.counts["discriminative_questions"] == 8


def test_always_no_answerer_blocks_and_f1_epsilons(tmp_path, disc_questions):
    """"No" to all 8. Overall: right on the 5 truth-no, accuracy 62.5; precision = 5/8 = 62.5; recall = 5/5 = 100;
    F1 = 2 * 0.625 * 1 / (1.625 + 1e-4) = 76.918...
    existence (11, 12, both no): accuracy, precision, recall 100; F1 = 2 / (2 + 1e-3) = 99.950 (AMBER's 1e-3 here;
    1e-4 would give 99.995).
    attribute (13 yes, 14 no, 15 yes, 16 no): accuracy 2/4 = 50, precision 2/4 = 50, recall 2/2 = 100,
    F1 = 1 / (1.5 + 1e-4) = 66.662; its parts: state (13, 14) the same 50/50/100; number (15 yes): accuracy 0,
    precision 0/1 = 0, recall 0 (no truth-no), F1 0; action (16 no): 100/100/100, F1 = 2 / (2 + 1e-4) = 99.995.
    relation (17 discriminative-relation yes, 18 relation no): 50/50/100, F1 66.662."""
    result = evaluate_amber(answers_file(tmp_path, {q["id"]: "No" for q in DISCRIMINATIVE}), disc_questions)
    assert result.metrics == pytest.approx({"accuracy": 62.5, "precision": 62.5, "recall": 100.0,
                                            "f1": 100 * 1.25 / 1.6251})
    assert result.groups["existence"] == pytest.approx({"accuracy": 100.0, "precision": 100.0, "recall": 100.0,
                                                        "f1": 100 * 2 / 2.001})
    half = {"accuracy": 50.0, "precision": 50.0, "recall": 100.0, "f1": 100 * 1 / 1.5001}
    assert result.groups["attribute"] == pytest.approx(half)
    assert result.groups["attribute-state"] == pytest.approx(half)
    assert result.groups["attribute-number"] == pytest.approx({"accuracy": 0.0, "precision": 0.0, "recall": 0.0,
                                                               "f1": 0.0})
    assert result.groups["attribute-action"]["f1"] == pytest.approx(100 * 2 / 2.0001)
    assert result.groups["relation"] == pytest.approx(half)
    assert list(result.groups) == ["existence", "attribute", "attribute-state", "attribute-number",
                                   "attribute-action", "relation"]
    assert result.counts["relation"] == 2 and result.counts["attribute"] == 4


def test_no_is_the_positive_class():
    """truth yes, yes, no, no answered Yes, Yes, Yes, No: accuracy 3/4 = 75. With "No" positive, precision = 1/1
    = 100 and recall = 1/2 = 50, F1 = 1 / (1.5 + 1e-4) = 66.662 (POPE's yes-positive view would give precision
    2/3 and recall 1)."""
    scores = discriminative_metrics([("yes", "Yes"), ("yes", "Yes"), ("no", "Yes"), ("no", "No")])
    assert scores == pytest.approx({"accuracy": 75.0, "precision": 100.0, "recall": 50.0, "f1": 100 / 1.5001})


@pytest.mark.parametrize(("text", "normalized"), [
    ("yes", "Yes"), ("NO", "No"), ("No.", "No"), ("Yes, there is.", "Yes"), ("  no", "No"), ("'Yes'", "Yes"),
    ("Nope", "Nope"), ("Not really", "Not really"), ("There is no dog", "There is no dog"), ("", ""),
])
def test_parse_answer_normalizes_the_first_word_only(text, normalized):
    assert parse_answer(text) == normalized
    assert parse_answer(text, normalize=False) == text


def test_exact_comparison_without_normalizing(tmp_path, disc_questions):
    """Answers "no." (11, truth no), "yes" (13, truth yes), "Nope" (14, truth no) and "Yes" to the other five.
    normalize=true: 11 No right, 13 Yes right, 14 wrong (Nope), 12/16/18 wrong (Yes), 15/17 right -> accuracy
    4/8 = 50; answered No once, rightly -> precision 100; recall 1/5 = 20; one unparsed.
    normalize=false (the official exact test): "no." and "yes" are not "No"/"Yes", so accuracy 2/8 = 25 (15, 17),
    nothing answered No -> precision 0, recall 0; three unparsed."""
    responses = {q["id"]: "Yes" for q in DISCRIMINATIVE} | {11: "no.", 13: "yes", 14: "Nope"}
    answers = answers_file(tmp_path, responses)
    normalized = evaluate_amber(answers, disc_questions)
    assert normalized.metrics["accuracy"] == pytest.approx(50.0)
    assert normalized.metrics["precision"] == pytest.approx(100.0)
    assert normalized.metrics["recall"] == pytest.approx(20.0)
    assert normalized.counts["unparsed_answers"] == 1
    exact = evaluate_amber(answers, disc_questions, normalize="false")
    assert exact.metrics == pytest.approx({"accuracy": 25.0, "precision": 0.0, "recall": 0.0, "f1": 0.0})
    assert exact.counts["unparsed_answers"] == 3


def test_smoothing_reproduces_the_official_counters(tmp_path, disc_questions):
    """kind=de scores the 2 existence questions; "No" to both with the official 0.001 head start on every
    denominator: accuracy = precision = recall = 2 / 2.001; overall F1 = 2PR / (P + R + 1e-4)."""
    result = evaluate_amber(answers_file(tmp_path, {q["id"]: "No" for q in DISCRIMINATIVE}), disc_questions,
                            kind="de", smoothing="0.001")
    p = 2 / 2.001
    assert result.metrics == pytest.approx({"accuracy": 100 * p, "precision": 100 * p, "recall": 100 * p,
                                            "f1": 100 * 2 * p * p / (2 * p + 1e-4)}, rel=1e-9)
    assert result.counts["discriminative_questions"] == 2


# -------------------------------------------------------------------------------------------- generative


def test_lemmatize_noun_keeps_forms_the_lexicon_knows():
    assert lemmatize_noun("glasses", {"glass", "glasses"}) == "glass"  # the shortest known form, as WordNet
    assert lemmatize_noun("glasses", {"glasses"}) == "glasses"
    assert lemmatize_noun("bus", {"bus"}) == "bus"  # "bu" is unknown
    assert lemmatize_noun("boxes", {"box"}) == "box"
    assert lemmatize_noun("men", {"man"}) == "man"
    assert lemmatize_noun("children", {"child"}) == "child"
    assert lemmatize_noun("cherries", {"cherry"}) == "cherry"
    assert lemmatize_noun("Dogs", {"dog"}) == "Dogs"  # case-sensitive, as the reference


def test_extract_nouns_keeps_vocabulary_nouns_in_order():
    vocabulary = object_vocabulary(RELATION)
    assert extract_nouns(DESCRIPTIONS[1], vocabulary) == ["puppy", "ground", "cat", "light", "dog"]
    assert extract_nouns(DESCRIPTIONS[2], vocabulary) == ["man", "car"]
    assert extract_nouns(DESCRIPTIONS[2], vocabulary, lowercase=True) == ["man", "car", "dog"]


def test_generative_metrics_by_hand(tmp_path, relation):
    """Vocabulary: RELATION's keys and words. Safe words: AMBER's nine (light among them).
    1 (truth dog, grass, tree; hallu cat, frisbee): nouns puppy, ground, cat, light, dog = 5. puppy -> dog
      covered (relation), ground -> grass covered (grass lists ground), cat hallucinated and a hallu object
      (Cog), light safe (skipped, still a noun), dog covered again. 1 hallucinated; covered 2/3; Cog 1/2.
    2 (truth person, car; hallu bench, dog): "men" -> man -> person covered, "cars" -> car covered, "Dogs" is
      capitalised and not matched (case-sensitive). nouns 2, none hallucinated; covered 2/2; Cog 0/2.
    3 (truth ground; hallu tree): kitten hallucinated (not on the hallu list), tree hallucinated and on it,
      ground covered. nouns 3, 2 hallucinated; covered 1/1; Cog 1/1.
    CHAIR = (1+0+2)/(5+2+3) = 30; Cover = 5/6 = 83.33; Hal = 2/3 = 66.67 (descriptions 1 and 3);
    Cog = (1+0+1)/(2+2+1) = 40."""
    questions = write_json(tmp_path / "gen.json", GENERATIVE)
    result = evaluate_amber(answers_file(tmp_path, DESCRIPTIONS), questions, relation=str(relation))
    assert result.metrics == pytest.approx({"chair": 30.0, "cover": 500 / 6, "hal": 200 / 3, "cog": 40.0})
    assert result.counts == {"descriptions": 3, "nouns": 10, "hallucinated_nouns": 3, "truth_objects": 6,
                             "covered_objects": 5, "hallu_objects": 5, "mentioned_hallu_objects": 2}
    assert any("AMBER-exact" in note and "similarity" in note for note in result.notes)


def test_generative_lowercase_and_safe_words_options(tmp_path, relation):
    """lowercase=true: "Dogs" in 2 becomes dog, hallucinated and on 2's hallu list -> nouns 11, hallucinated 4,
    CHAIR = 4/11 = 36.36, Hal = 3/3 = 100, Cog = 3/5 = 60, Cover still 5/6.
    A safe-word file without "light" (lowercase off): light in 1 is now hallucinated -> CHAIR = 4/10 = 40."""
    questions = write_json(tmp_path / "gen.json", GENERATIVE)
    answers = answers_file(tmp_path, DESCRIPTIONS)
    lower = evaluate_amber(answers, questions, relation=str(relation), lowercase="true")
    assert lower.metrics == pytest.approx({"chair": 400 / 11, "cover": 500 / 6, "hal": 100.0, "cog": 60.0})
    safe = tmp_path / "safe_words.txt"
    safe.write_text("orange\nsnack\n\n")
    strict = evaluate_amber(answers, questions, relation=str(relation), safe_words=str(safe))
    assert strict.metrics["chair"] == pytest.approx(40.0)


def test_related_words_are_checked_before_names_as_the_official_script():
    """AMBER's inference.py: truth [grass, ground], relation grass -> [ground]; response "The ground and the grass."
    gives nouns ground, grass. "ground" is first found among grass's related words, so it covers grass; "grass" is
    no object's related word, so it covers grass by name again: 1 of 2 covered, official Cover 50."""
    relation = {"grass": ["ground"], "ground": []}
    score = score_response(["ground", "grass"], ["grass", "ground"], [], relation)
    assert (score.nouns, score.hallucinated, score.truth, score.covered) == (2, 0, 2, 1)
    assert generative_metrics([score])["cover"] == 50.0


def test_direct_match_order_checks_names_first():
    """match_order=direct: "ground" covers ground itself, then "grass" covers grass: 2 of 2, Cover 100."""
    score = score_response(["ground", "grass"], ["grass", "ground"], [], {"grass": ["ground"], "ground": []},
                           match_order="direct")
    assert (score.nouns, score.hallucinated, score.truth, score.covered) == (2, 0, 2, 2)


def test_match_order_option_reaches_the_scores(tmp_path):
    questions = write_json(tmp_path / "gen.json", [{"id": 1, "type": "generative", "truth": ["grass", "ground"],
                                                    "hallu": []}])
    relation = write_json(tmp_path / "relation.json", {"grass": ["ground"], "ground": []})
    answers = answers_file(tmp_path, {1: "The ground and the grass."})
    assert evaluate_amber(answers, questions, relation=str(relation)).metrics["cover"] == 50.0
    direct = evaluate_amber(answers, questions, relation=str(relation), match_order="direct")
    assert direct.metrics["cover"] == 100.0
    with pytest.raises(ConfigError, match="match_order"):
        evaluate_amber(answers, questions, relation=str(relation), match_order="nearest")


def test_all_kinds_together_give_the_amber_score(tmp_path, all_questions, relation):
    """Generative as above (CHAIR 30) and "No" to the 8 discriminative questions (F1 = 100 * 1.25 / 1.6251 =
    76.918): AMBER score = (100 - 30 + 76.918) / 2 = 73.459."""
    responses = DESCRIPTIONS | {q["id"]: "No" for q in DISCRIMINATIVE}
    result = evaluate_amber(answers_file(tmp_path, responses), all_questions, relation=str(relation))
    f1 = 100 * 1.25 / 1.6251
    assert result.metrics["f1"] == pytest.approx(f1)
    assert result.metrics["amber_score"] == pytest.approx((100 - 30 + f1) / 2)


def test_kind_selects_questions(tmp_path, all_questions, relation):
    """Answers to the discriminative questions alone: kind=discriminative (or d) scores them; the default kind=all
    wants the generative ones too and names the first missing id (1)."""
    answers = answers_file(tmp_path, {q["id"]: "Yes" for q in DISCRIMINATIVE})
    for kind in ("discriminative", "d"):
        assert evaluate_amber(answers, all_questions, kind=kind).metrics["accuracy"] == pytest.approx(37.5)
    with pytest.raises(DataError, match="no answer for id 1 "):
        evaluate_amber(answers, all_questions, relation=str(relation))
    attribute = evaluate_amber(answers, all_questions, kind="da")
    assert attribute.counts["discriminative_questions"] == 4
    assert attribute.metrics["accuracy"] == pytest.approx(50.0)  # 13 and 15 are yes; 14 and 16 no


# -------------------------------------------------------------------------------------------- bad input


def test_missing_answer_names_the_id(tmp_path, disc_questions):
    responses = {q["id"]: "Yes" for q in DISCRIMINATIVE if q["id"] != 16}
    with pytest.raises(DataError, match="no answer for id 16 "):
        evaluate_amber(answers_file(tmp_path, responses), disc_questions)


def test_duplicate_answer_id_names_the_id(tmp_path, disc_questions):
    rows = [{"id": q["id"], "response": "Yes"} for q in DISCRIMINATIVE] + [{"id": 12, "response": "No"}]
    with pytest.raises(DataError, match="id 12 appears twice"):
        evaluate_amber(write_json(tmp_path / "answers.json", rows), disc_questions)


def test_answer_to_unknown_question_names_the_id(tmp_path, disc_questions):
    responses = {q["id"]: "Yes" for q in DISCRIMINATIVE} | {99: "No"}
    with pytest.raises(DataError, match="id 99 is not a question"):
        evaluate_amber(answers_file(tmp_path, responses), disc_questions)


def test_unknown_type_and_bad_truth_name_the_id(tmp_path):
    answers = answers_file(tmp_path, {11: "Yes"})
    with pytest.raises(DataError, match="question 11 has unknown type 'discriminative-colour'"):
        evaluate_amber(answers, write_json(tmp_path / "q1.json", [disc(11, "discriminative-colour", "no")]))
    with pytest.raises(DataError, match="question 11: truth must be yes or no, got 'maybe'"):
        evaluate_amber(answers, write_json(tmp_path / "q2.json", [disc(11, "relation", "maybe")]))
    with pytest.raises(DataError, match="generative question 11: hallu must be a list"):
        evaluate_amber(answers, write_json(tmp_path / "q3.json", [{"id": 11, "type": "generative",
                                                                   "truth": ["dog"]}]),
                       relation=str(write_json(tmp_path / "r.json", RELATION)))


def test_option_errors(tmp_path, all_questions, relation):
    answers = answers_file(tmp_path, DESCRIPTIONS | {q["id"]: "No" for q in DISCRIMINATIVE})
    with pytest.raises(ConfigError, match="needs relation=PATH"):
        evaluate_amber(answers, all_questions)
    with pytest.raises(ConfigError, match="kind must be one of"):
        evaluate_amber(answers, all_questions, kind="captions", relation=str(relation))
    with pytest.raises(ConfigError, match="amber has no option 'similarity'"):
        evaluate_amber(answers, all_questions, similarity="0.8")
    with pytest.raises(ConfigError, match="relation: no such file"):
        evaluate_amber(answers, all_questions, relation=str(tmp_path / "absent.json"))
