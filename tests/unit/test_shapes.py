"""The shapes world: determinism, exact ground truth, the planted prior, ShapesPOPE rules, SFT truth, config, CLI.

Most checks read one small world built once per module; each recomputes what it checks from the images and
`sources.jsonl` instead of trusting the generator's own statistics.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from align.data import shapes_vocab as vocab
from align.data.nouns import article
from align.data.shapes import (
    CLASS_COLORS,
    PLANTED_CLASSES,
    PLANTED_PARTNERS,
    POPE_STRATEGIES,
    POPE_SUFFIX,
    PRIOR_ORDER,
    ShapesConfig,
    class_prior,
    draw_classes,
    generate_shapes_world,
)
from align.errors import ConfigError
from align.resolve import resolve_config

WORLD = ShapesConfig(n=60, seed=7, eval_fraction=0.5)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def file_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shapes") / "world"
    generate_shapes_world(WORLD, out)
    return out


@pytest.fixture(scope="module")
def sources(world) -> list[dict]:
    return read_jsonl(world / "sources.jsonl")


@pytest.fixture(scope="module")
def world_json(world) -> dict:
    return json.loads((world / "world.json").read_text())


def class_sets(rows: list[dict]) -> list[set[str]]:
    return [{o["name"] for o in r["objects"]} for r in rows]


# --------------------------------------------------------------------------------------- determinism


def test_same_config_gives_byte_identical_files(tmp_path):
    config = ShapesConfig(n=12, seed=3)
    generate_shapes_world(config, tmp_path / "a")
    generate_shapes_world(config, tmp_path / "b")
    a, b = file_hashes(tmp_path / "a"), file_hashes(tmp_path / "b")
    # 12 PNGs + sources, sft, 4 POPE files, world.json, dataset.json, 5 probe files, 2 attribute POPE files, the
    # ShapesCHAIR prompts and 8 RL task files (4 tasks, train and eval)
    assert len(a) == 12 + 8 + 8 + 8
    assert a == b


def test_a_different_seed_gives_different_images_and_records(tmp_path):
    generate_shapes_world(ShapesConfig(n=6, seed=1), tmp_path / "a")
    generate_shapes_world(ShapesConfig(n=6, seed=2), tmp_path / "b")
    a, b = file_hashes(tmp_path / "a"), file_hashes(tmp_path / "b")
    assert a["sources.jsonl"] != b["sources.jsonl"]
    assert sum(a[k] != b[k] for k in a if k.startswith("images/")) >= 5


def test_an_image_depends_only_on_its_seed_not_on_n(tmp_path):
    generate_shapes_world(ShapesConfig(n=4, seed=9), tmp_path / "small")
    generate_shapes_world(ShapesConfig(n=10, seed=9), tmp_path / "big")
    small, big = file_hashes(tmp_path / "small"), file_hashes(tmp_path / "big")
    assert all(small[k] == big[k] for k in small if k.startswith("images/"))


# --------------------------------------------------------------------------------------- ground truth


def test_every_object_is_exactly_where_and_what_its_record_says(world, sources):
    assert_pixels_match_records(world, sources, WORLD.image_size)


def assert_pixels_match_records(world: Path, sources: list[dict], side: int) -> None:
    for record in sources:
        pixels = np.asarray(Image.open(world / record["images"][0]).convert("RGB")).astype(int)
        assert pixels.shape == (side, side, 3)
        covered = np.zeros((side, side), bool)
        for obj in record["objects"]:
            x0, y0, x1, y1 = obj["bbox"]
            assert 0 <= x0 < x1 <= side and 0 <= y0 < y1 <= side
            rgb = np.array(vocab.COLORS[obj["color"]])
            cx, cy = obj["center"]
            assert (cx, cy) == ((x0 + x1) // 2, (y0 + y1) // 2)
            assert tuple(pixels[cy, cx]) == tuple(rgb), (record["id"], obj)
            inside = pixels[y0:y1, x0:x1]
            is_object = (inside == rgb).all(-1)
            is_white = (inside == 255).all(-1)
            assert (is_object | is_white).all(), "a box holds only its own colour and background"
            # tight box: the shape touches all four edges
            assert is_object[0].any() and is_object[-1].any() and is_object[:, 0].any() and is_object[:, -1].any()
            covered[y0:y1, x0:x1] = True
        background = (pixels == 255).all(-1)
        assert background[~covered].all(), "nothing is drawn outside the recorded boxes"


def test_boxes_keep_the_minimum_gap(sources):
    assert_gap_kept(sources, WORLD.min_gap)


def assert_gap_kept(sources: list[dict], gap: int) -> None:
    for record in sources:
        boxes = [o["bbox"] for o in record["objects"]]
        for i, (ax0, ay0, ax1, ay1) in enumerate(boxes):
            for bx0, by0, bx1, by1 in boxes[i + 1:]:
                assert ax1 + gap <= bx0 or bx1 + gap <= ax0 or ay1 + gap <= by0 or by1 + gap <= ay0


GRID_WORLD = ShapesConfig(n=40, seed=3, image_size=96, max_objects=9, min_objects=4, placement="grid",
                         grid_jitter=2, eval_fraction=0.5)


@pytest.fixture(scope="module")
def grid_world(tmp_path_factory) -> tuple[Path, list[dict]]:
    out = tmp_path_factory.mktemp("shapes-grid") / "world"
    generate_shapes_world(GRID_WORLD, out)
    return out, read_jsonl(out / "sources.jsonl")


def test_grid_placement_puts_each_shape_inside_its_own_cell(grid_world):
    world, sources = grid_world
    side, margin = GRID_WORLD.image_size, -(-GRID_WORLD.min_gap // 2)
    assert_pixels_match_records(world, sources, side)
    assert_gap_kept(sources, GRID_WORLD.min_gap)
    assert max(len(r["objects"]) for r in sources) >= 7, "the 9 cells leave room for many shapes"
    for record in sources:
        cells = [o["cell"] for o in record["objects"]]
        assert len(set(cells)) == len(cells), record["id"]
        for obj in record["objects"]:
            row, col = divmod(vocab.CELLS.index(obj["cell"]), 3)
            x0, y0, x1, y1 = obj["bbox"]
            # the whole box, not only its centre, lies in the cell's third of each axis (96 px: 32 px cells)
            assert col * 32 + margin <= x0 and x1 <= (col + 1) * 32 - margin, obj
            assert row * 32 + margin <= y0 and y1 <= (row + 1) * 32 - margin, obj
            # centred up to the jitter (and half a pixel of rounding each way)
            assert abs((x0 + x1) / 2 - (col * 32 + 16)) <= GRID_WORLD.grid_jitter + 1, obj
            assert abs((y0 + y1) / 2 - (row * 32 + 16)) <= GRID_WORLD.grid_jitter + 1, obj


def test_planted_by_class_world_draws_the_8_planted_classes_in_their_own_colours(tmp_path):
    out = tmp_path / "world"
    generate_shapes_world(ShapesConfig(n=80, seed=4, classes="planted", palette="by-class"), out)
    sources = read_jsonl(out / "sources.jsonl")
    assert_pixels_match_records(out, sources, 96)
    seen = {o["name"] for r in sources for o in r["objects"]}
    assert seen <= set(PLANTED_CLASSES) and len(seen) >= 6
    assert all(o["color"] == CLASS_COLORS[o["name"]] for r in sources for o in r["objects"])
    world = json.loads((out / "world.json").read_text())
    assert world["palette"] == CLASS_COLORS and world["prior_order"] == list(PLANTED_CLASSES)
    assert set(CLASS_COLORS) == set(PLANTED_CLASSES) and len(set(CLASS_COLORS.values())) == 8


def test_cell_and_size_labels_follow_the_box(sources):
    side = WORLD.image_size
    bands = list(vocab.SIZES.items())
    for record in sources:
        for obj in record["objects"]:
            cx, cy = obj["center"]
            assert obj["cell"] == vocab.CELLS[3 * min(2, cy * 3 // side) + min(2, cx * 3 // side)]
            x0, y0, x1, y1 = obj["bbox"]
            area = (x1 - x0) * (y1 - y0) / side**2
            expected = next((name for name, (_, high) in bands if area < high), bands[-1][0])
            assert obj["size"] == expected


def test_shape_geometry_keeps_classes_apart(sources):
    seen = Counter()
    for record in sources:
        for obj in record["objects"]:
            x0, y0, x1, y1 = obj["bbox"]
            w, h = x1 - x0, y1 - y0
            seen[obj["name"]] += 1
            if obj["name"] in ("circle", "square", "cross"):
                assert w == h, obj  # never stretched
            if obj["name"] == "diamond":
                assert h >= 1.3 * w, obj  # never a square turned 45 degrees
            if obj["name"] in ("ellipse", "rectangle"):
                assert max(w, h) >= 1.4 * min(w, h), obj
    assert {"circle", "square", "diamond", "rectangle"} <= set(seen)


def test_object_counts_and_sizes_vary(sources):
    assert {len(r["objects"]) for r in sources} >= {1, 2, 3, 4, 5}
    assert all(WORLD.min_objects <= len(r["objects"]) <= WORLD.max_objects for r in sources)
    assert {o["size"] for r in sources for o in r["objects"]} == set(vocab.SIZES)


# ------------------------------------------------------------------------------------------- captions


def mentioned_classes(text: str) -> list[str]:
    """Canonical shape mentions, the CHAIR way: phrases first, then singularized single words."""
    words = [w for w in re.split(r"[^a-z]+", text.lower()) if w]
    found, i = [], 0
    while i < len(words):
        pair = " ".join(words[i:i + 2])
        if pair in vocab.PHRASES:
            found.append(vocab.PHRASES[pair])
            i += 2
            continue
        word = vocab.singularize(words[i])
        if word in vocab.SYNONYMS:
            found.append(vocab.SYNONYMS[word])
        i += 1
    return found


def test_caption_states_every_object_and_nothing_else(sources):
    cell_of_phrase = {phrase: cell for cell, phrase in vocab.CELL_PHRASES.items()}
    one = re.compile(r"^(?:There is a|A) (\w+) (\w+) (\w+) (?:is )?(.+)$")
    for record in sources:
        objects, text = record["objects"], record["caption"]
        assert set(mentioned_classes(text)) == {o["name"] for o in objects}
        sentences = [s for s in text.split(". ") if s]
        assert sentences[0] == f"The image shows {vocab.NUMBER_WORDS[len(objects)]} " \
                               f"{'shape' if len(objects) == 1 else 'shapes'} on a white background"
        stated, counted = Counter(), {}
        for sentence in sentences[1:]:
            sentence = sentence.rstrip(".")
            if sentence.startswith("There are "):
                _, _, number, plural = sentence.split(" ")
                counted[vocab.singularize(plural)] = number
                continue
            size, color, name, where = one.match(sentence).groups()
            stated[(size, color, name, cell_of_phrase[where])] += 1
        assert stated == Counter((o["size"], o["color"], o["name"], o["cell"]) for o in objects)
        class_counts = Counter(o["name"] for o in objects)
        assert counted == {c: vocab.NUMBER_WORDS[k] for c, k in class_counts.items() if k > 1}


def test_vocabulary_round_trips():
    assert len(vocab.CLASSES) == 12 and set(PRIOR_ORDER) == set(vocab.CLASSES)
    assert {vocab.singularize(p) for p in vocab.PLURALS.values()} == set(vocab.CLASSES)
    assert vocab.singularize("rhombi") == "rhombus" and vocab.singularize("crosses") == "cross"
    assert vocab.singularize("cross") == "cross" and vocab.singularize("plus") == "plus"
    assert mentioned_classes("a half moon, two plus signs and grey discs") == ["crescent", "cross", "circle"]
    assert article("ellipse") == "an" and article("square") == "a"
    colours = list(vocab.COLORS.values()) + [vocab.BACKGROUND_RGB]
    closest = min(math.dist(a, b) for i, a in enumerate(colours) for b in colours[i + 1:])
    assert closest >= 100


# ---------------------------------------------------------------------------------- prior, co-occurrence


def zipf_slope(counts: dict[str, int]) -> float:
    """Least-squares slope of log count against log prior rank, over classes no planted rule adds."""
    partners = set(PLANTED_PARTNERS.values())
    points = [(math.log(rank), math.log(counts[c])) for rank, c in enumerate(PRIOR_ORDER, 1) if c not in partners]
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    return sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)


@pytest.mark.parametrize("skew", [0.0, 1.0, 2.0])
def test_class_prior_is_skewed_as_configured(skew):
    import random

    config = ShapesConfig(class_skew=skew)
    prior = class_prior(skew)
    rng = random.Random(0)
    counts = Counter(c for _ in range(4000) for c in draw_classes(rng, config, prior))
    assert zipf_slope(counts) == pytest.approx(-skew, abs=0.15)
    assert prior[PRIOR_ORDER[0]] / prior[PRIOR_ORDER[-1]] == pytest.approx(12**skew)


def pooled_pair_rate(sets: list[set[str]]) -> float:
    anchored = [(s, p) for a, p in PLANTED_PARTNERS.items() for s in sets if a in s]
    return sum(p in s for s, p in anchored) / len(anchored)


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.8, 1.0])
def test_planted_pairs_co_occur_at_the_configured_rate(tmp_path, rate):
    generate_shapes_world(ShapesConfig(n=240, seed=11, cooccurrence=rate), tmp_path / "w")
    sets = class_sets(read_jsonl(tmp_path / "w" / "sources.jsonl"))
    # 1.0 may fall short by the rare full image holding more anchors than it has room for partners
    tolerance = {0.0: 0.0, 1.0: 0.02}.get(rate, 0.1)
    assert pooled_pair_rate(sets) == pytest.approx(rate, abs=tolerance)


def test_world_json_statistics_match_the_sources(world_json, sources):
    sets = class_sets(sources)
    eval_sets = class_sets([s for s in sources if s["split"] == "eval"])
    assert world_json["vocab_version"] == vocab.VOCAB_VERSION
    assert world_json["planted_pairs"] == PLANTED_PARTNERS
    assert world_json["image_frequency"]["eval"] == {c: sum(c in s for s in eval_sets) for c in vocab.CLASSES}
    for a in vocab.CLASSES:
        for b in vocab.CLASSES:
            if a != b:
                assert world_json["cooccurrence_counts"][a][b] == sum(a in s and b in s for s in sets)
    for record, present in zip(sources, sets, strict=True):
        expected = sorted({PLANTED_PARTNERS[a] for a in present if a in PLANTED_PARTNERS} - present)
        assert world_json["bait"][record["id"]] == expected
    assert any(world_json["bait"].values())


# ----------------------------------------------------------------------------------------------- POPE


@pytest.fixture(scope="module")
def pope(world) -> dict[str, list[dict]]:
    return {s: read_jsonl(world / f"pope_{s}.jsonl") for s in POPE_STRATEGIES}


def by_image(questions: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for q in questions:
        grouped.setdefault(q["image"], []).append(q)
    return grouped


def test_pope_questions_follow_the_pope_rules(pope, sources):
    present = {s["images"][0]: {o["name"] for o in s["objects"]} for s in sources if s["split"] == "eval"}
    positives_per_split = []
    for strategy, questions in pope.items():
        assert questions and all(q["category"] == strategy and q["probe"] == "object" for q in questions)
        labels = Counter(q["label"] for q in questions)
        assert labels["yes"] == labels["no"]
        grouped = by_image(questions)
        assert set(grouped) == set(present)  # every eval image, no train image
        for image, rows in grouped.items():
            assert [q["label"] for q in rows] == ["yes", "no"] * (len(rows) // 2)
            assert len(rows) == 2 * min(WORLD.pope_positives, len(present[image]))
            targets = [q["target"] for q in rows]
            assert len(set(targets)) == len(targets), "a class is asked about once per image"
            for q in rows:
                assert (q["target"] in present[image]) == (q["label"] == "yes")
                assert q["text"] == f"Is there {'an' if q['target'][0] in 'aeiou' else 'a'} {q['target']} in the image?"
        positives_per_split.append({i: [q["target"] for q in rows if q["label"] == "yes"] for i, rows in grouped.items()})
    assert positives_per_split[0] == positives_per_split[1] == positives_per_split[2]
    assert any("Is there an ellipse" in q["text"] for qs in pope.values() for q in qs)


def negatives_with_context(questions: list[dict], present: dict[str, set[str]]):
    """(positive, negative, classes that were valid when the negative was chosen) in question order."""
    for image, rows in by_image(questions).items():
        asked = set(present[image])
        for yes, no in zip(rows[::2], rows[1::2], strict=True):
            valid = [c for c in vocab.CLASSES if c not in asked]
            yield yes["target"], no["target"], valid
            asked.add(no["target"])


def eval_present(sources) -> dict[str, set[str]]:
    return {s["images"][0]: {o["name"] for o in s["objects"]} for s in sources if s["split"] == "eval"}


def test_popular_negatives_are_the_most_frequent_absent_classes(pope, sources):
    present = eval_present(sources)
    frequency = Counter(c for classes in present.values() for c in classes)
    for _, negative, valid in negatives_with_context(pope["popular"], present):
        assert frequency[negative] == max(frequency[c] for c in valid)


def test_adversarial_negatives_co_occur_most_with_their_positive(pope, sources):
    present = eval_present(sources)
    cooc = Counter((a, b) for r in sources for a in {o["name"] for o in r["objects"]}
                   for b in {o["name"] for o in r["objects"]} if a != b)
    fallbacks = 0
    for positive, negative, valid in negatives_with_context(pope["adversarial"], present):
        best = max(cooc[(positive, c)] for c in valid)
        assert cooc[(positive, negative)] == best
        fallbacks += best == 0
    assert fallbacks < len(pope["adversarial"]) // 4


def test_random_negatives_spread_over_absent_classes(pope, sources):
    present = eval_present(sources)
    negatives = [n for _, n, valid in negatives_with_context(pope["random"], present)]
    assert len(set(negatives)) >= 9
    popular = [n for _, n, _ in negatives_with_context(pope["popular"], present)]
    assert negatives != popular


def test_pope_all_combines_the_splits_with_unique_ids(world, pope):
    combined = read_jsonl(world / "pope_all.jsonl")
    assert combined == [q for s in POPE_STRATEGIES for q in pope[s]]
    assert len({q["question_id"] for q in combined}) == len(combined)


# ------------------------------------------------------------------------------------------------ SFT


def test_sft_comes_from_train_images_and_says_only_true_things(world, sources):
    by_id = {s["id"]: s for s in sources}
    records = read_jsonl(world / "sft.jsonl")
    train_ids = {s["id"] for s in sources if s["split"] == "train"}
    assert {r["id"].rsplit("_", 1)[0] for r in records} == train_ids
    kinds = Counter()
    for record in records:
        source = by_id[record["id"].rsplit("_", 1)[0]]
        assert record["images"] == source["images"]
        user, assistant = record["messages"]
        assert user["role"] == "user" and user["content"][0] == {"type": "image"}
        assert assistant["role"] == "assistant"
        question, answer = user["content"][1]["text"], assistant["content"][0]["text"]
        counts = Counter(o["name"] for o in source["objects"])
        if record["id"].endswith("_caption"):
            assert answer == source["caption"]
            kinds["caption"] += 1
            continue
        assert question.endswith(POPE_SUFFIX)
        question = question[: -len(POPE_SUFFIX)]
        if m := re.fullmatch(r"Is there an? (\w+) in the image\?", question):
            assert answer == ("Yes" if counts[m.group(1)] else "No")
            kinds[answer] += 1
        elif m := re.fullmatch(r"What color is the (\w+)\?", question):
            (only,) = [o for o in source["objects"] if o["name"] == m.group(1)]
            assert answer == only["color"].capitalize()
            kinds["color"] += 1
        elif m := re.fullmatch(r"How many (\w+) are there in the image\?", question):
            assert answer == str(counts[vocab.singularize(m.group(1))])
            kinds["count"] += 1
        else:
            raise AssertionError(f"unexpected question {question!r}")
    assert kinds["caption"] == len(train_ids)
    assert kinds["Yes"] == kinds["No"] > 0 and kinds["color"] > 0 and kinds["count"] > 0


def test_sources_and_sft_meet_the_data_contract(world):
    from align.data.schema import validate_records

    for name, kind in (("sources.jsonl", "source"), ("sft.jsonl", "sft")):
        rows = read_jsonl(world / name)
        assert validate_records(rows, kind, world / name, base_dir=world) == len(rows) > 0


def test_dataset_json_records_counts_settings_and_files(world):
    meta = json.loads((world / "dataset.json").read_text())
    assert meta["kind"] == "shapes"
    assert meta["settings"]["n"] == WORLD.n and meta["settings"]["seed"] == WORLD.seed
    assert meta["counts"]["images"] == WORLD.n
    assert meta["counts"]["sft"] == len(read_jsonl(world / "sft.jsonl"))
    for name in meta["files"].values():
        assert (world / name).exists()


# --------------------------------------------------------------------------------------------- config


def test_every_config_field_has_help():
    from dataclasses import fields

    assert all(f.metadata.get("help") for f in fields(ShapesConfig))


@pytest.mark.parametrize("bad", [
    {"n": 0}, {"image_size": 16}, {"min_objects": 4, "max_objects": 2}, {"max_objects": 9},
    {"cooccurrence": 1.5}, {"eval_fraction": -0.1}, {"class_skew": -1.0}, {"qa_per_image": -1},
    {"min_gap": 50}, {"seed": -1}, {"n": 2.5}, {"placement": "hex"}, {"max_objects": 10, "placement": "grid"},
    {"grid_jitter": 40}, {"classes": "some"}, {"palette": "by-class"},
])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ConfigError, match=next(iter(bad))):
        ShapesConfig(**bad)


def test_config_errors_reach_recipe_overrides():
    with pytest.raises(ConfigError, match="cooccurrence"):
        resolve_config(ShapesConfig, overrides=["cooccurrence=2"])
    assert resolve_config(ShapesConfig, overrides=["n=5"]).n == 5


def test_settings_too_tight_to_place_the_shapes_fail_cleanly(tmp_path):
    tight = ShapesConfig(n=3, image_size=32, min_objects=8, max_objects=8, min_gap=4)
    with pytest.raises(ConfigError, match="could not place"):
        generate_shapes_world(tight, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ CLI


def test_cli_generates_a_world(run_cli, tmp_path):
    out = tmp_path / "world"
    result = run_cli("data", "shapes", "--out", out, "--n", 8, "--seed", 1)
    assert result.code == 0, result
    assert len(list((out / "images").glob("*.png"))) == 8
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["counts"]["images"] == 8 and meta["settings"]["seed"] == 1


def test_cli_bad_value_is_one_line_exit_2_and_writes_nothing(run_cli, tmp_path):
    out = tmp_path / "world"
    result = run_cli("data", "shapes", "--out", out, "--n", 8, "--cooccurrence", 1.5)
    assert result.code == 2, result
    assert result.err.startswith("error: ") and result.err.count("\n") == 1 and "cooccurrence" in result.err
    assert list(tmp_path.iterdir()) == []
