"""Shapes-world benchmarks: the sanity checks of docs/benchmarks.md (oracle, always-yes, always-no, name-every-class captioner) on
a small generated world, attribute errors on hand-written captions worked out by hand, likelihood scoring, the
9.4 probe files, and bad input.

Oracle answers are derived from sources.jsonl, never from the question labels, so they also check the labels.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from align.data import shapes_vocab as vocab
from align.data.nouns import article
from align.data.shapes import PROBE_FILES, ShapesConfig, generate_shapes_world, write_shapes_probes
from align.errors import ConfigError, DataError
from align.eval import get_benchmark
from align.eval.shapes import evaluate_chair, evaluate_pope, evaluate_probes

WORLD = ShapesConfig(n=32, seed=11, eval_fraction=0.5)  # 16 eval images


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes-eval") / "world"
    generate_shapes_world(WORLD, out)
    write_shapes_probes(out)
    return out


@pytest.fixture(scope="module")
def objects_by_image(world) -> dict[str, list[dict]]:
    return {s["images"][0]: s["objects"] for s in read_jsonl(world / "sources.jsonl")}


def truth(question: dict, objects: list[dict]) -> bool:
    """The true answer to a question row, from the image's objects and the row's own fields (not its label)."""
    named = [o for o in objects if o["name"] == question["target"]]
    probe = question["probe"]
    if probe in ("object", "existence"):
        return bool(named)
    if probe == "attribute":
        return any(o["color"] == question["color"] for o in named)
    if probe == "color":
        (only,) = named
        return only["color"] == question["value"]
    if probe == "count":
        return len(named) == question["value"]
    if probe == "relation":
        (a,) = named
        (b,) = [o for o in objects if o["name"] == question["value"]]
        return a["bbox"][2] <= b["bbox"][0]
    raise AssertionError(f"unknown probe {probe!r}")


def answer_all(questions: list[dict], answer, path: Path) -> Path:
    """An answers file: `answer(question)` -> the row's extra fields."""
    return write_jsonl(path, [{"question_id": q["question_id"], **answer(q)} for q in questions])


def oracle(objects_by_image):
    return lambda q: {"text": "Yes" if truth(q, objects_by_image[q["image"]]) else "No"}


# ------------------------------------------------------------------------------------------ probe files


def test_probe_files_are_balanced_pairs_with_true_labels(world, objects_by_image):
    probes = read_jsonl(world / "probes_all.jsonl")
    kinds = Counter(q["probe"] for q in probes)
    assert set(kinds) == {"existence", "color", "count", "relation"} and min(kinds.values()) >= 4
    assert len({q["question_id"] for q in probes}) == len(probes)
    for kind in kinds:
        rows = [q for q in probes if q["probe"] == kind]
        assert rows == read_jsonl(world / f"probes_{kind}.jsonl")
        per_image: dict[str, list[str]] = {}
        for q in rows:
            per_image.setdefault(q["image"], []).append(q["label"])
            assert (q["label"] == "yes") == truth(q, objects_by_image[q["image"]]), q
        assert all(labels == ["yes", "no"] for labels in per_image.values()), kind  # MME's pairs
    attribute = read_jsonl(world / "pope_attribute.jsonl")
    assert Counter(q["label"] for q in attribute)["yes"] == len(attribute) / 2
    for q in attribute:
        assert (q["label"] == "yes") == truth(q, objects_by_image[q["image"]]), q
        assert q["text"] == f"Is there {article(q['color'])} {q['color']} {q['target']} in the image?"
    for q in (q for q in attribute if q["category"] == "adversarial" and q["label"] == "no"):
        assert q["target"] in {o["name"] for o in objects_by_image[q["image"]]}  # same shape, wrong colour
    combined = read_jsonl(world / "pope_object_attribute.jsonl")
    assert combined == read_jsonl(world / "pope_all.jsonl") + attribute
    assert len({q["question_id"] for q in combined}) == len(combined)


def test_probe_files_are_deterministic_and_rewriting_them_changes_nothing(tmp_path):
    """The generator writes the probe files; `write_shapes_probes` (for older worlds) writes the same bytes."""
    config = ShapesConfig(n=12, seed=3)
    for name in ("a", "b"):
        generate_shapes_world(config, tmp_path / name)
    before = {p.name: digest(p) for p in (tmp_path / "a").iterdir() if p.is_file()}
    assert set(PROBE_FILES) <= set(before)
    assert all(digest(tmp_path / "a" / f) == digest(tmp_path / "b" / f) for f in PROBE_FILES)
    for name in PROBE_FILES:
        (tmp_path / "a" / name).unlink()
    write_shapes_probes(tmp_path / "a")
    after = {p.name: digest(p) for p in (tmp_path / "a").iterdir() if p.is_file()}
    assert after == before


def test_probes_need_a_shapes_world(tmp_path):
    with pytest.raises(DataError, match="not a shapes world"):
        write_shapes_probes(tmp_path)


# ------------------------------------------------------------------------------------------ ShapesPOPE


def test_registry_points_at_these_functions():
    assert get_benchmark("shapes-pope") is evaluate_pope
    assert get_benchmark("shapes-chair") is evaluate_chair
    assert get_benchmark("shapes-probes") is evaluate_probes


def test_pope_oracle_is_perfect_in_every_group(world, objects_by_image, tmp_path):
    questions = world / "pope_object_attribute.jsonl"
    answers = answer_all(read_jsonl(questions), oracle(objects_by_image), tmp_path / "answers.jsonl")
    result = evaluate_pope(answers, questions)
    expected_groups = {"random", "popular", "adversarial", "object", "attribute"}
    assert expected_groups <= set(result.groups)
    for figures in [result.metrics, *result.groups.values()]:
        assert figures["accuracy"] == figures["precision"] == figures["recall"] == figures["f1"] == 1.0
        assert figures["yes_ratio"] == 0.5 and figures["unknown_rate"] == 0.0
    assert result.metrics["mean_f1"] == 1.0
    assert result.counts["questions"] == result.counts["object"] + result.counts["attribute"]


def test_pope_always_yes(world, tmp_path):
    questions = world / "pope_all.jsonl"
    answers = answer_all(read_jsonl(questions), lambda q: {"text": "Yes, there is."}, tmp_path / "yes.jsonl")
    result = evaluate_pope(answers, questions)
    assert set(result.groups) == {"random", "popular", "adversarial"}  # one probe: no probe columns
    for figures in [result.metrics, *result.groups.values()]:
        assert figures["accuracy"] == 0.5 and figures["precision"] == 0.5 and figures["recall"] == 1.0
        assert figures["f1"] == pytest.approx(2 / 3) and figures["yes_ratio"] == 1.0
    assert result.metrics["mean_f1"] == pytest.approx(2 / 3)
    assert result.metrics["f1_adversarial"] == pytest.approx(2 / 3)


def test_pope_always_no_is_guarded(world, tmp_path):
    questions = world / "pope_all.jsonl"
    answers = answer_all(read_jsonl(questions), lambda q: {"text": "No"}, tmp_path / "no.jsonl")
    result = evaluate_pope(answers, questions)
    for figures in [result.metrics, *result.groups.values()]:
        assert figures["accuracy"] == 0.5 and figures["f1"] == 0.0
        assert figures["precision"] == 0.0 and figures["recall"] == 0.0 and figures["yes_ratio"] == 0.0


def test_reference_parser_gives_headline_and_strict_parser_the_unknown_rate(world, objects_by_image, tmp_path):
    """Truthful answers phrased so only the reference parser reads them: "There is no X" is no (a "no" token),
    "I see one" is yes by default; the strict parser reads neither."""
    questions = world / "pope_all.jsonl"
    rows = read_jsonl(questions)
    phrased = oracle(objects_by_image)
    answers = answer_all(rows, lambda q: {"text": "I see one." if phrased(q)["text"] == "Yes" else
                                          f"There is no {q['target']}."}, tmp_path / "phrased.jsonl")
    result = evaluate_pope(answers, questions)
    assert result.metrics["accuracy"] == 1.0 and result.metrics["unknown_rate"] == 1.0
    assert "reference parser" in result.notes[0]


def test_likelihood_scoring(world, objects_by_image, tmp_path):
    """yes iff yes_logprob > no_logprob; the text (here always wrong) is ignored unless scoring=text."""
    questions = world / "pope_all.jsonl"
    rows = read_jsonl(questions)

    def scored(q):
        true = truth(q, objects_by_image[q["image"]])
        return {"text": "No" if true else "Yes", "yes_logprob": -0.1 if true else -2.5,
                "no_logprob": -2.5 if true else -0.1}

    answers = answer_all(rows, scored, tmp_path / "likelihood.jsonl")
    auto = evaluate_pope(answers, questions)
    assert auto.metrics["accuracy"] == 1.0 and "unknown_rate" not in auto.metrics
    assert "likelihood" in auto.notes[0]
    assert evaluate_pope(answers, questions, scoring="likelihood").metrics == auto.metrics
    assert evaluate_pope(answers, questions, scoring="text").metrics["accuracy"] == 0.0
    ties = answer_all(rows, lambda q: {"yes_logprob": -1, "no_logprob": -1.0}, tmp_path / "ties.jsonl")
    assert evaluate_pope(ties, questions).metrics["yes_ratio"] == 0.0  # a tie is "no"


def test_likelihood_needs_numbers(world, tmp_path):
    questions = world / "pope_all.jsonl"
    rows = read_jsonl(questions)
    answers = answer_all(rows, lambda q: {"text": "yes", "yes_logprob": -1.0, "no_logprob": -2.0},
                         tmp_path / "a.jsonl")
    broken = read_jsonl(answers)
    broken[3]["no_logprob"] = "low"
    write_jsonl(answers, broken)
    with pytest.raises(DataError, match="no_logprob") as error:
        evaluate_pope(answers, questions, scoring="likelihood")
    assert error.value.row == 4
    del broken[3]["no_logprob"]
    write_jsonl(answers, broken)
    assert evaluate_pope(answers, questions).notes[0].startswith("scored with POPE")  # auto falls back to text
    with pytest.raises(DataError, match="no_logprob"):
        evaluate_pope(answers, questions, scoring="likelihood")


def test_pope_bad_input_names_the_id(world, tmp_path):
    questions = world / "pope_all.jsonl"
    rows = read_jsonl(questions)
    answers = [{"question_id": q["question_id"], "text": "Yes"} for q in rows]
    missing = write_jsonl(tmp_path / "missing.jsonl", answers[:5] + answers[6:])
    with pytest.raises(DataError, match=f"no answer for id {rows[5]['question_id']}"):
        evaluate_pope(missing, questions)
    twice = write_jsonl(tmp_path / "twice.jsonl", answers + [answers[7]])
    with pytest.raises(DataError, match=f"question_id {rows[7]['question_id']} appears twice"):
        evaluate_pope(twice, questions)
    extra = write_jsonl(tmp_path / "extra.jsonl", answers + [{"question_id": 10**6, "text": "Yes"}])
    with pytest.raises(DataError, match="1000000"):
        evaluate_pope(extra, questions)
    assert evaluate_pope(extra, questions, allow_extra="true").counts["questions"] == len(rows)
    bad_label = write_jsonl(tmp_path / "q.jsonl", [dict(rows[0], label="maybe"), *rows[1:]])
    with pytest.raises(DataError, match=f"question {rows[0]['question_id']}: label"):
        evaluate_pope(write_jsonl(tmp_path / "a.jsonl", answers), bad_label)
    no_text = write_jsonl(tmp_path / "no_text.jsonl", [{"question_id": q["question_id"]} for q in rows])
    with pytest.raises(DataError, match="no answer"):
        evaluate_pope(no_text, questions)
    with pytest.raises(ConfigError, match="questions"):
        evaluate_pope(missing)
    with pytest.raises(ConfigError, match="scoring"):
        evaluate_pope(missing, questions, scoring="vibes")
    with pytest.raises(ConfigError, match="parser"):
        evaluate_pope(missing, questions, parser="strict")


# ------------------------------------------------------------------------------------------ 9.4 probes


def test_probes_oracle(world, objects_by_image, tmp_path):
    questions = world / "probes_all.jsonl"
    answers = answer_all(read_jsonl(questions), oracle(objects_by_image), tmp_path / "oracle.jsonl")
    result = evaluate_probes(answers, questions)
    assert set(result.groups) == {"existence", "color", "count", "relation"}
    for kind, figures in result.groups.items():
        assert figures["accuracy"] == figures["f1"] == figures["amber_accuracy"] == 1.0, kind
        # AMBER's F1 keeps its epsilon: 2 / (2 + 1e-3) in the existence block, 2 / (2 + 1e-4) elsewhere.
        assert figures["amber_f1"] == pytest.approx(2 / (2 + (1e-3 if kind == "existence" else 1e-4)))
        assert figures["mme_acc"] == figures["mme_acc_plus"] == 1.0 and figures["mme_score"] == 200.0
    assert result.metrics["mme_total"] == 800.0


def test_probes_always_yes_and_always_no(world, tmp_path):
    questions = world / "probes_all.jsonl"
    rows = read_jsonl(questions)
    yes = evaluate_probes(answer_all(rows, lambda q: {"text": "Yes"}, tmp_path / "yes.jsonl"), questions)
    no = evaluate_probes(answer_all(rows, lambda q: {"text": "No"}, tmp_path / "no.jsonl"), questions)
    for figures in yes.groups.values():
        assert figures["accuracy"] == 0.5 and figures["f1"] == pytest.approx(2 / 3) and figures["yes_ratio"] == 1
        assert figures["amber_precision"] == figures["amber_recall"] == figures["amber_f1"] == 0.0
        assert figures["mme_acc"] == 0.5 and figures["mme_acc_plus"] == 0.0 and figures["mme_score"] == 50.0
    for figures in no.groups.values():
        assert figures["accuracy"] == 0.5 and figures["f1"] == 0.0
        assert figures["amber_precision"] == 0.5 and figures["amber_recall"] == 1.0
        assert figures["amber_f1"] == pytest.approx(2 / 3, abs=1e-3)
        assert figures["mme_acc_plus"] == 0.0
    assert yes.metrics["mme_total"] == no.metrics["mme_total"] == 200.0


@pytest.mark.parametrize("false_answer, pope, amber, mme", [
    # POPE's parser finds no "No"/"no"/"not" token ("Not" is capitalised) and reads yes; AMBER keeps it as
    # written (first word "not"), which is wrong; MME finds "no" in the first four characters.
    ("Not at all", 0.5, 0.5, 1.0),
    # POPE reads the "no" token; AMBER's first word is "there" (wrong); MME sees "ther" (other, wrong).
    ("There is no such shape.", 1.0, 0.5, 0.5),
])
def test_probe_views_parse_with_their_own_rules(world, objects_by_image, tmp_path, false_answer, pope, amber, mme):
    """Truthful answers, "Yes" when true and `false_answer` when false, read by each benchmark's own rule."""
    questions = world / "probes_all.jsonl"
    rows = read_jsonl(questions)
    answers = answer_all(rows, lambda q: {"text": "Yes" if truth(q, objects_by_image[q["image"]]) else false_answer},
                         tmp_path / "answers.jsonl")
    result = evaluate_probes(answers, questions)
    assert result.metrics["accuracy"] == pope and result.metrics["amber_accuracy"] == amber
    assert all(g["mme_acc"] == mme for g in result.groups.values())


def test_probes_likelihood(world, objects_by_image, tmp_path):
    questions = world / "probes_all.jsonl"
    rows = read_jsonl(questions)
    answers = answer_all(rows, lambda q: {"yes_logprob": 0.0 if truth(q, objects_by_image[q["image"]]) else -9.0,
                                          "no_logprob": -3.0}, tmp_path / "lp.jsonl")
    result = evaluate_probes(answers, questions)
    assert result.metrics["accuracy"] == 1.0 and result.metrics["mme_total"] == 800.0


# ------------------------------------------------------------------------------------------ ShapesCHAIR


def test_chair_oracle_captions_are_clean(world, tmp_path):
    """The generator's exact captions, answered through the prompts file: nothing hallucinated or misstated, and
    every claim kind actually occurs (else the zeros would prove nothing)."""
    sources = {s["id"]: s for s in read_jsonl(world / "sources.jsonl")}
    prompts = world / "chair_questions.jsonl"
    answers = answer_all(read_jsonl(prompts), lambda q: {"text": sources[q["question_id"]]["caption"]},
                         tmp_path / "captions.jsonl")
    result = evaluate_chair(answers, prompts)
    m, c = result.metrics, result.counts
    assert m["chair_i"] == m["chair_s"] == m["chair_i_unique"] == m["chair_s_refine"] == 0.0
    assert m["recall"] == m["cover"] == 1.0 and m["hal"] == 0.0
    assert m["color_chair"] == m["count_error"] == m["position_error"] == m["cog"] == 0.0
    assert c["captions"] == WORLD.n // 2
    assert c["color_claims"] == c["mentions"] - c["count_claims"] > 0 and c["count_claims"] > 0
    assert c["position_claims"] == c["color_claims"] and c["bait_classes"] > 0


def test_chair_template_naming_every_class(world, tmp_path):
    """"There is a circle, an ellipse, ... and a crescent.": every image lacks some class (at most 8 objects of
    12 classes), so CHAIR_s = 1, Recall = 1, every bait is mentioned, and CHAIR_i = absent classes / 12."""
    sources = [s for s in read_jsonl(world / "sources.jsonl") if s["split"] == "eval"]
    caption = "There is " + ", ".join(f"{article(c)} {c}" for c in vocab.CLASSES) + "."
    answers = write_jsonl(tmp_path / "every.jsonl", [{"image_id": s["id"], "caption": caption} for s in sources])
    result = evaluate_chair(answers, world / "sources.jsonl")
    absent = sum(len(vocab.CLASSES) - len({o["name"] for o in s["objects"]}) for s in sources)
    assert result.metrics["chair_s"] == 1.0 and result.metrics["recall"] == 1.0 and result.metrics["cog"] == 1.0
    assert result.metrics["chair_i"] == pytest.approx(absent / (len(vocab.CLASSES) * len(sources)))
    assert result.metrics["chair_i_unique"] == pytest.approx(result.metrics["chair_i"])


HAND_SOURCES = [
    {"id": "img_a", "images": ["images/img_a.png"], "objects": [
        {"name": "circle", "color": "red", "size": "large", "cell": "top-left"},
        {"name": "square", "color": "blue", "size": "small", "cell": "center"},
        {"name": "square", "color": "blue", "size": "medium", "cell": "bottom-right"}]},
    {"id": "img_b", "images": ["images/img_b.png"], "objects": [
        {"name": "crescent", "color": "yellow", "size": "small", "cell": "left"}]},
    {"id": "img_c", "images": ["images/img_c.png"], "objects": [
        {"name": "heart", "color": "purple", "size": "medium", "cell": "center"}]},
]
HAND_CAPTIONS = {
    # 4 sentences, 29 tokens: circle (red: right; top left: right), "two squares" (right), green square (wrong
    # colour; center: right), star (hallucinated; on the right: wrong)
    "img_a": "A red circle is in the top left. There are two squares. A green square is in the center. "
             "A star is on the right.",
    # 12 tokens after "half moons" merges: "two yellow half moons" = 2 yellow crescents (there is 1: wrong),
    # yellow crescent (right), star-shaped -> star (hallucinated, and img_b's bait); two classes in the
    # sentence, so "on the left" is no position claim
    "img_b": "Two yellow half moons and a star-shaped figure on the left.",
    "img_c": "Nothing to see here.",  # 5 tokens, no mention: misses the heart and the bait circle
}


def hand_world(tmp_path: Path, with_world_json: bool = True) -> Path:
    folder = tmp_path / "hand"
    folder.mkdir()
    write_jsonl(folder / "sources.jsonl", HAND_SOURCES)
    if with_world_json:
        (folder / "world.json").write_text(json.dumps({"bait": {"img_a": [], "img_b": ["star"],
                                                                "img_c": ["circle"]}}))
    return folder


def test_chair_metrics_on_hand_written_captions(tmp_path):
    folder = hand_world(tmp_path)
    answers = write_jsonl(tmp_path / "answers.jsonl", [
        {"image_id": "img_a", "caption": HAND_CAPTIONS["img_a"]},
        {"image": "images/img_b.png", "text": HAND_CAPTIONS["img_b"]},  # named by image path
        {"question_id": "img_c.png", "text": HAND_CAPTIONS["img_c"]},  # named by file name
    ])
    result = evaluate_chair(answers, folder / "sources.jsonl")
    m = result.metrics
    assert m["chair_i"] == pytest.approx(2 / 6)  # star in a, star in b, of circle, square x2, star, crescent, star
    assert m["chair_s"] == m["hal"] == pytest.approx(2 / 3)
    assert m["chair_s_refine"] == 1.0  # both captions with a mention hallucinate
    assert m["recall"] == m["cover"] == pytest.approx(3 / 4)  # a: circle, square; b: crescent; c: not the heart
    assert m["len"] == pytest.approx((29 + 12 + 5) / 3)
    assert m["chair_i_unique"] == pytest.approx(2 / 5)  # a: {circle, square, star}; b: {crescent, star}
    assert m["color_chair"] == pytest.approx(1 / 3)  # red circle ok, green square wrong, yellow crescent ok
    assert m["count_error"] == pytest.approx(1 / 2)  # two squares ok, two yellow crescents wrong
    assert m["position_error"] == pytest.approx(1 / 3)  # circle top-left ok, square center ok, star right wrong
    assert m["cog"] == pytest.approx(1 / 2)  # b's star mentioned, c's circle not
    c = result.counts
    assert (c["color_claims"], c["count_claims"], c["position_claims"], c["bait_classes"]) == (3, 2, 3, 2)


def test_chair_counts_and_positions_read_attributes_and_lists(tmp_path):
    folder = hand_world(tmp_path)
    caption = ("- red circle, top-left corner\n"  # one line, one class: a position claim (right)
               "- 3 blue squares\n"  # digits: 2 blue squares (wrong)
               "- two small blue squares\n"  # 1 small blue square (wrong)
               "- one square in the middle; a star!")  # "one" is no count claim; middle = center (right); the
    # ";" ends the sentence, so the star does not share it and the square's position still counts
    answers = write_jsonl(tmp_path / "list.jsonl", [{"image_id": "img_a", "text": caption}])
    result = evaluate_chair(answers, folder / "sources.jsonl")
    assert result.counts["count_claims"] == 2 and result.metrics["count_error"] == 1.0
    assert result.counts["position_claims"] == 2 and result.metrics["position_error"] == 0.0
    assert result.counts["color_claims"] == 3 and result.metrics["color_chair"] == 0.0


def test_chair_without_world_json_recomputes_bait(tmp_path):
    folder = hand_world(tmp_path, with_world_json=False)
    answers = write_jsonl(tmp_path / "answers.jsonl", [{"image_id": k, "text": v} for k, v in HAND_CAPTIONS.items()])
    result = evaluate_chair(answers, folder / "sources.jsonl")
    # a heart plants a circle and a crescent a star: the same baits as the world.json above
    assert result.counts["bait_classes"] == 2 and result.metrics["cog"] == 0.5
    assert any("no world.json" in note for note in result.notes)


def test_chair_bad_input_names_the_id(tmp_path):
    folder = hand_world(tmp_path)
    sources = folder / "sources.jsonl"

    def run(rows, name, **options):
        return evaluate_chair(write_jsonl(tmp_path / name, rows), sources, **options)

    with pytest.raises(DataError, match="'shapes_000999' is not in"):
        run([{"image_id": "img_a", "text": "A circle."}, {"image_id": "shapes_000999", "text": "x"}], "absent.jsonl")
    with pytest.raises(DataError, match="'img_a' appears twice"):
        run([{"image_id": "img_a", "text": "x"}, {"image_id": "img_a", "text": "y"}], "twice.jsonl")
    with pytest.raises(DataError, match="'img_a' is answered twice"):
        run([{"image_id": "img_a", "text": "x"}, {"image_id": "images/img_a.png", "text": "y"}], "alias.jsonl")
    with pytest.raises(DataError, match="no id") as error:
        run([{"image_id": "img_a", "text": "x"}, {"text": "no id here"}], "noid.jsonl")
    assert error.value.row == 2
    with pytest.raises(DataError, match="no answer"):
        run([{"image_id": "img_b"}], "notext.jsonl")
    # A prompts file: every prompt needs its answer, and its images must be in the sources beside it.
    prompts = write_jsonl(folder / "prompts.jsonl", [{"question_id": 1, "image": "images/img_a.png"},
                                                     {"question_id": 2, "image": "images/img_z.png"}])
    with pytest.raises(DataError, match="no answer for id 2"):
        evaluate_chair(write_jsonl(tmp_path / "one.jsonl", [{"question_id": 1, "text": "x"}]), prompts)
    with pytest.raises(DataError, match="question 2: image 'images/img_z.png' is not in"):
        evaluate_chair(write_jsonl(tmp_path / "both.jsonl", [{"question_id": 1, "text": "x"},
                                                             {"question_id": 2, "text": "y"}]), prompts)
    bad_sources = write_jsonl(tmp_path / "bad_sources.jsonl", [{"id": "s", "objects": [{"name": "blob"}]}])
    with pytest.raises(DataError, match="'blob' is not a shapes class"):
        evaluate_chair(write_jsonl(tmp_path / "s.jsonl", [{"image_id": "s", "text": "x"}]), bad_sources)
    with pytest.raises(ConfigError, match="ground truth"):
        evaluate_chair(tmp_path / "s.jsonl")
    with pytest.raises(DataError, match="no such file"):
        run([{"image_id": "img_a", "text": "x"}], "w.jsonl", world=str(tmp_path / "nowhere.json"))
