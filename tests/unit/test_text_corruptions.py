"""Text corruptions (data_builders/corrupt/text.py) and vocabularies (align/data/vocab/).

The span contract is checked on every corruption made here: the chosen and rejected texts are identical outside the
recorded spans (each text is rebuilt from the other with the spans), and each span holds exactly the swapped phrase,
with no "'s", punctuation or surrounding space inside.
"""

from __future__ import annotations

import json
import random
import re

import pytest

from align.data import shapes_vocab
from align.data.shapes import PLANTED_PARTNERS, ShapesConfig, generate_shapes_world
from align.data.vocab import VOCABULARIES, get_vocabulary, load_vocabulary
from align.data.vocab.coco import coco_double_word_dict, coco_synonym_lines, coco_vocabulary
from align.data.vocab.shapes import shapes_vocabulary
from align.errors import DataError, UnknownNameError
from data_builders.corrupt.text import (
    TEXT_CORRUPTIONS,
    TextCorruption,
    find_mentions,
    get_text_corruption,
    inject,
    swap_attributes,
    swap_objects,
    swap_relations,
)

SHAPES = shapes_vocabulary()
COCO = coco_vocabulary()
# A swapped phrase starts and ends with a letter or digit: no article-less space, "'s", comma or full stop.
_PHRASE_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9 \-]*[A-Za-z0-9])?$")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(sources, world.json) of a 30-image shapes world."""
    folder = tmp_path_factory.mktemp("shapes") / "world"
    generate_shapes_world(ShapesConfig(n=30, seed=1), folder)
    sources = [json.loads(line) for line in (folder / "sources.jsonl").read_text().splitlines()]
    return sources, json.loads((folder / "world.json").read_text())


def check_spans(result: TextCorruption) -> None:
    """The span contract, checked from both sides."""
    original, corrupted = result.original, result.corrupted
    assert len(result.chosen_spans) == len(result.rejected_spans) == len(result.swaps) >= 1
    assert original != corrupted
    for spans, text in ((result.chosen_spans, original), (result.rejected_spans, corrupted)):
        previous_end = 0
        for start, end in spans:
            assert previous_end <= start < end <= len(text), spans  # in order, non-overlapping, non-empty
            previous_end = end
    for (cs, ce), (rs, re_), swap in zip(result.chosen_spans, result.rejected_spans, result.swaps, strict=True):
        assert original[cs:ce] == swap.before and corrupted[rs:re_] == swap.after
        assert swap.before != swap.after
        assert _PHRASE_RE.match(swap.before) and _PHRASE_RE.match(swap.after), swap
    assert _rebuild(original, result.chosen_spans, corrupted, result.rejected_spans) == corrupted
    assert _rebuild(corrupted, result.rejected_spans, original, result.chosen_spans) == original


def _rebuild(source, source_spans, other, other_spans) -> str:
    """`source` with its k-th span replaced by `other`'s k-th span: equals `other` iff outside text is shared."""
    out, position = [], 0
    for (s, e), (os_, oe) in zip(source_spans, other_spans, strict=True):
        out += [source[position:s], other[os_:oe]]
        position = e
    return "".join(out) + source[position:]


def mentioned(text, vocab) -> set[str]:
    return {m.cls for m in find_mentions(text, vocab)}


def check_objects_absent(result: TextCorruption, present: set[str], vocab) -> None:
    """Every class the corruption brings in is absent from the image, read back through the synonym map."""
    for swap in result.swaps:
        words = swap.after.split()
        noun = " ".join(words[1:] if words[0].lower() in ("a", "an") else words)
        cls = vocab.canonical(noun)
        assert cls == swap.new and cls not in present, swap
    new_classes = mentioned(result.corrupted, vocab) - mentioned(result.original, vocab)
    assert new_classes == {s.new for s in result.swaps}
    assert not new_classes & present


# ------------------------------------------------------------------------------------------ vocabularies


def test_coco_synonym_list_is_chairs():
    lines = coco_synonym_lines()
    entries = [e for line in lines for e in line]
    # The sizes of CHAIR's data/synonyms.txt: 80 lines, 416 entries, 403 distinct, 26 multi-word.
    assert len(lines) == 80 and len(COCO.classes) == 80
    assert (len(entries), len(set(entries)), sum(" " in e for e in entries)) == (416, 403, 26)
    assert lines[0][:4] == ["person", "girl", "boy", "man"] and len(lines[0]) == 67
    for cls in ("tv", "couch", "dining table", "hair drier", "motorcycle", "airplane", "skis", "sports ball"):
        assert cls in COCO.classes
    expected = {
        "man": "person", "woman": "person", "child": "person", "people": "person", "motorbike": "motorcycle",
        "motor bike": "motorcycle", "tv": "tv", "television": "tv", "televison": "tv", "monitor": "tv",
        "table": "dining table", "desk": "dining table", "seat": "chair", "bow": "tie", "ball": "sports ball",
        "phone": "cell phone", "iphone": "cell phone", "stove": "oven", "cheesecake": "cake", "teddybear": "teddy bear",
    }
    for word, cls in expected.items():
        assert COCO.synonyms[word] == cls, word
    assert COCO.canonical("men") == "person" and COCO.canonical("Hot Dogs") == "hot dog"


def test_coco_reference_exact_keeps_chairs_quirks():
    exact = coco_vocabulary(reference_exact=True)
    assert " motor bike" in exact.synonyms and " cheesecake" in exact.synonyms and "iPhone" in exact.synonyms
    assert "motor bike" not in exact.synonyms and "motor bike" in COCO.synonyms
    assert len(exact.synonyms) == len(COCO.synonyms) == 403


def test_coco_double_words_are_chairs():
    table = coco_double_word_dict()
    assert len(table) == 55  # 27 distinct phrases + 24 baby/adult animals + 2 passenger vehicles + 2 fixes
    assert table["baby bird"] == "bird" and table["adult cub"] == "cub"
    assert table["passenger jet"] == "jet" and table["passenger train"] == "train"
    assert table["bow tie"] == "tie" and table["toilet seat"] == "toilet" and table["wine glas"] == "wine glass"
    assert table["home plate"] == "home plate" and table["fire hydrant"] == "fire hydrant"
    assert COCO.phrases == table


def test_two_word_phrases_match_as_one_object():
    text = "A hot dog by a teddy bear, a fire hydrant, a stop sign and a cell phone on home plate."
    assert [m.cls for m in find_mentions(text, COCO)] == [
        "hot dog", "teddy bear", "fire hydrant", "stop sign", "cell phone",
    ]
    # CHAIR's qualifiers: the animal or vehicle counts, "baby"/"passenger" is not a person; "train track" hides
    # the train; "orange" before a noun is a colour.
    text = "A baby elephant near the passenger train on the train track, and an orange cat."
    assert [m.cls for m in find_mentions(text, COCO)] == ["elephant", "train", "cat"]


def test_shapes_vocabulary_is_built_from_shapes_vocab():
    assert SHAPES.classes == shapes_vocab.CLASSES and set(VOCABULARIES) == {"coco", "shapes"}
    for name, synonyms in shapes_vocab.SHAPES.items():
        assert all(SHAPES.synonyms[s] == name for s in synonyms)
    assert SHAPES.phrases == shapes_vocab.PHRASES and SHAPES.colors == tuple(shapes_vocab.COLORS)
    assert SHAPES.safe_words == shapes_vocab.SAFE_WORDS and SHAPES.sizes == tuple(shapes_vocab.SIZES)
    for singular, plural in SHAPES.plurals.items():
        if singular in shapes_vocab.PLURALS:
            assert plural == shapes_vocab.PLURALS[singular]
        if " " not in singular:
            assert shapes_vocab.singularize(plural) == singular, plural  # the shapes evaluator reads it back
    assert SHAPES.plurals["rhombus"] == "rhombi" and SHAPES.canonical("half moons") == "crescent"
    assert VOCABULARIES["shapes"]() is SHAPES and get_vocabulary("coco") is COCO


@pytest.mark.parametrize("vocab", [SHAPES, COCO], ids=["shapes", "coco"])
def test_every_written_class_reads_back(vocab):
    """What a corruption writes for a class (its display name, singular or plural) names that class."""
    for cls in vocab.classes:
        word = vocab.display_name(cls)
        assert vocab.canonical(word) == cls and vocab.canonical(vocab.plural(word)) == cls, cls
        assert [m.cls for m in find_mentions(f"There is one {word} here.", vocab)] == [cls]
    for form, (cls, _) in vocab.forms.items():
        assert vocab.synonyms.get(form, cls) == cls  # no plural collides with another class's word


def test_load_vocabulary_text_and_json(tmp_path):
    text = tmp_path / "kitchen.txt"
    text.write_text("# kitchen\ncup, mug, coffee mug\nknife\n\nfork\n")
    vocab = load_vocabulary(text)
    assert vocab.classes == ("cup", "knife", "fork") and vocab.canonical("knives") == "knife"
    assert [m.cls for m in find_mentions("A coffee mug and two knives.", vocab)] == ["cup", "knife"]
    data = {"name": "kitchen", "classes": {"cup": ["mug"], "knife": []}, "frequencies": {"cup": 3},
            "relations": {"near": "far from"}, "colors": ["Red", "blue"]}
    path = tmp_path / "kitchen.json"
    path.write_text(json.dumps(data))
    vocab = get_vocabulary(path)
    assert vocab.name == "kitchen" and vocab.relations["near"] == ("far from",) and vocab.colors == ("red", "blue")
    path.write_text(json.dumps({**data, "colours": []}))
    with pytest.raises(DataError, match="unknown keys.*colours.*valid keys"):
        load_vocabulary(path)
    text.write_text("cup, mug\nglass, mug\n")
    with pytest.raises(DataError, match="'mug' names two classes"):
        load_vocabulary(text)
    with pytest.raises(UnknownNameError, match="coco, shapes"):
        get_vocabulary("no-such-vocabulary")


# ---------------------------------------------------------------------------------------- shapes world


@pytest.mark.parametrize("strategy", ["random", "popular", "adversarial"])
def test_swap_objects_on_shapes_world(world, strategy):
    sources, info = world
    frequencies = info["image_frequency"]["all"]
    for index, source in enumerate(sources):
        present = {o["name"] for o in source["objects"]}
        result = swap_objects(source["caption"], source["objects"], SHAPES, random.Random(index), strategy,
                              max_swaps=3, frequencies=frequencies, cooccurrence=info["cooccurrence_counts"])
        if len(present) == len(SHAPES.classes):
            assert result is None
            continue
        check_spans(result)
        check_objects_absent(result, present, SHAPES)
        assert result.category == "object" and result.strategy == strategy
        assert {s.old for s in result.swaps} <= present


def test_popular_picks_the_most_frequent_absent_class(world):
    sources, info = world
    frequencies = info["image_frequency"]["all"]
    for index, source in enumerate(sources):
        result = swap_objects(source["caption"], source["objects"], SHAPES, random.Random(index), "popular",
                              frequencies=frequencies)
        absent = [c for c in SHAPES.classes if c not in mentioned(source["caption"], SHAPES)]
        best = max(absent, key=lambda c: (frequencies[c], -SHAPES.classes.index(c)))
        assert result.swaps[0].new == best
    # The single most frequent class is present, so the runner-up is taken.
    result = swap_objects("There is a star.", ["star", "circle"], SHAPES, random.Random(0), "popular",
                          frequencies={"circle": 9, "heart": 5, "star": 1})
    assert result.corrupted == "There is a heart."


def test_adversarial_picks_the_planted_partner():
    for anchor, partner in PLANTED_PARTNERS.items():
        text = f"There is a small red {anchor} in the top left."
        result = swap_objects(text, [{"name": anchor, "color": "red"}], SHAPES, random.Random(0), "adversarial")
        assert result.swaps[0].new == partner and result.corrupted == text.replace(anchor, partner)


def test_adversarial_prefers_cooccurring_absent_classes(world):
    sources, info = world
    cooc = info["cooccurrence_counts"]
    for index, source in enumerate(sources):
        present = {o["name"] for o in source["objects"]}
        result = swap_objects(source["caption"], source["objects"], SHAPES, random.Random(index), "adversarial",
                              cooccurrence=cooc)
        swap = result.swaps[0]
        pool = [c for c in SHAPES.classes if c not in present]
        best_with_source = max(cooc[swap.old][c] for c in pool)
        assert cooc[swap.old][swap.new] == best_with_source
        if best_with_source == 0 and not any(cooc[p][c] for p in present for c in pool):
            continue  # nothing co-occurs: POPE's random fallback
        assert cooc[swap.old][swap.new] > 0 or any(cooc[p][swap.new] for p in present)


def test_swap_attributes_on_shapes_world(world):
    sources, _ = world
    seen = set()
    for index, source in enumerate(sources):
        objects = source["objects"]
        result = swap_attributes(source["caption"], objects, SHAPES, random.Random(index), max_swaps=3)
        check_spans(result)
        assert result.category == "attribute"
        for swap, (start, _) in zip(result.swaps, result.chosen_spans, strict=True):
            seen.add(swap.kind)
            sentence = _sentence(result.original, start)
            classes = mentioned(sentence, SHAPES)
            if swap.kind == "color":
                noun = find_mentions(result.original[start:], SHAPES)[0].cls
                assert swap.new not in {o["color"] for o in objects if o["name"] == noun}
            elif swap.kind == "size":
                noun = find_mentions(result.original[start:], SHAPES)[0].cls
                assert swap.new not in {o["size"] for o in objects if o["name"] == noun}
            elif swap.kind == "count":
                noun = find_mentions(result.original[start:], SHAPES)[0].cls
                assert int(swap.new) >= 2 and int(swap.new) != sum(o["name"] == noun for o in objects)
            else:
                assert swap.new not in {o["cell"] for o in objects if o["name"] in classes}
                assert swap.after == shapes_vocab.CELL_PHRASES[swap.new]
    assert seen == {"color", "size", "count", "position"}


def _sentence(text: str, at: int) -> str:
    start = text.rfind(".", 0, at) + 1
    end = text.find(".", at)
    return text[start:end]


def test_inject_on_shapes_world_records_the_category(world):
    sources, _ = world
    categories = set()
    for index, source in enumerate(sources):
        result = inject(source["caption"], source["objects"], SHAPES, random.Random(index))
        check_spans(result)
        categories.add(result.category)
        kinds = {s.kind for s in result.swaps}
        assert kinds == {"object"} if result.category == "object" else kinds <= {"color", "size", "count", "position"}
        if result.category == "object":
            check_objects_absent(result, {o["name"] for o in source["objects"]}, SHAPES)
            assert result.strategy == "adversarial"  # the shapes vocabulary knows the planted pairs
    assert categories == {"object", "attribute"}  # shapes captions state no relations


# ----------------------------------------------------------------------------------- plurals and articles


def test_articles_change_with_the_noun_and_sit_inside_the_span():
    result = swap_objects("There is a circle.", ["circle"], SHAPES, random.Random(0), "popular",
                          frequencies={"ellipse": 5})
    assert result.corrupted == "There is an ellipse."
    assert result.swaps[0].before == "a circle" and result.swaps[0].after == "an ellipse"
    check_spans(result)
    result = swap_objects("An ellipse is here.", ["ellipse"], SHAPES, random.Random(0), "popular",
                          frequencies={"circle": 5})
    assert result.corrupted == "A circle is here." and result.chosen_spans == ((0, 10),)
    # An unchanged article stays outside the span; so does one that belongs to an adjective.
    result = swap_objects("a circle and a small circle", ["circle"], SHAPES, random.Random(0), "popular",
                          frequencies={"heart": 5}, max_swaps=2)
    assert result.corrupted == "a heart and a small heart" and result.chosen_spans == ((2, 8), (21, 27))
    result = swap_attributes("There is a gray ellipse.", [{"name": "ellipse", "color": "gray"}], SHAPES,
                             random.Random(3), kinds=("color",))
    assert result.swaps[0].before.split()[-1] == "gray"
    expected = "an" if result.swaps[0].new == "orange" else "a"
    assert result.corrupted == f"There is {expected} {result.swaps[0].new} ellipse."
    check_spans(result)


def test_plurals_are_kept():
    result = swap_objects("There are two circles.", ["circle"], SHAPES, random.Random(0), "popular",
                          frequencies={"heart": 5})
    assert result.corrupted == "There are two hearts." and result.swaps[0].before == "circles"
    result = swap_objects("Two boxes of crosses.", ["cross"], SHAPES, random.Random(0), "popular",
                          frequencies={"rectangle": 5})
    assert result.corrupted == "Two boxes of rectangles."
    result = swap_objects("Three men and two sheep.", ["person", "sheep"], COCO, random.Random(0), "popular",
                          frequencies={"bus": 5, "dog": 4}, max_swaps=2)
    assert result.corrupted == "Three buses and two dogs."
    check_spans(result)


def test_possessive_and_punctuation_stay_outside():
    text = "The dog's collar is red, the man's hat is blue, and a cat."
    for seed in range(10):
        result = swap_objects(text, ["dog", "person", "cat"], COCO, random.Random(seed), max_swaps=3)
        check_spans(result)
        assert [s.before for s in result.swaps] == ["dog", "man", "a cat" if result.swaps[2].after[:2] == "an"
                                                     else "cat"]
        assert "'s collar" in result.corrupted and "'s hat" in result.corrupted and result.corrupted[-1] == "."


def test_case_is_kept():
    result = swap_objects("Dogs and a TV.", ["dog", "tv"], COCO, random.Random(0), "popular",
                          frequencies={"cat": 5, "bed": 4}, max_swaps=2)
    assert result.corrupted == "Cats and a BED."


# ---------------------------------------------------------------------------------------------- COCO


def test_coco_swaps_never_insert_a_present_object():
    text = "A man rides a motorbike past a bus, a dog and two cars near a fire hydrant."
    present = ["person", "motorbike", "bus", "dog", "car", "fire hydrant"] + list(COCO.classes[20:75])
    for seed in range(50):
        for strategy in ("random", "popular"):
            result = swap_objects(text, present, COCO, random.Random(seed), strategy, max_swaps=4,
                                  frequencies={c: i for i, c in enumerate(COCO.classes)})
            check_spans(result)
            check_objects_absent(result, {COCO.canonical(p) for p in present}, COCO)
            assert not any(s.new == "motorcycle" for s in result.swaps)  # "motorbike" named it


def test_qualified_mentions():
    result = swap_objects("A baby elephant.", ["elephant"], COCO, random.Random(0), "popular",
                          frequencies={"giraffe": 5})
    assert result.corrupted == "A baby giraffe." and result.swaps[0].before == "elephant"
    result = swap_objects("A baby elephant.", ["elephant"], COCO, random.Random(0), "popular",
                          frequencies={"umbrella": 5})
    # "baby umbrella" would read "baby" as a person, so the qualifier goes too (and the article follows).
    assert result.corrupted == "An umbrella." and result.swaps[0].before == "A baby elephant"
    check_spans(result)


def test_coco_attributes():
    text = "There are 3 red apples and a big dog in the top left corner, on the left of the cat."
    result = swap_attributes(text, ["apple", "dog", "cat"], COCO, random.Random(1), max_swaps=5)
    check_spans(result)
    kinds = {s.kind: s for s in result.swaps}
    assert set(kinds) == {"count", "color", "size", "position"}
    assert kinds["count"].after.isdigit() and kinds["count"].after != "3"
    assert kinds["size"].new != "large"  # "big" states large
    # Before "corner" only another corner reads right.
    assert kinds["position"].after in {"in the top right", "in the bottom left", "in the bottom right"}
    assert "on the left of the cat" in result.corrupted  # a relation, not a position
    result = swap_attributes("The top-left and the lower right corner.", [], COCO, random.Random(0),
                             kinds=("position",), max_swaps=2)
    assert [s.after.replace(" ", "-") in ("top-right", "bottom-left", "bottom-right", "top-left")
            for s in result.swaps] == [True, True]
    assert "-" in result.swaps[0].after and "-" not in result.swaps[1].after  # written like the original


# ------------------------------------------------------------------------------------------- relations


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The cat is to the left of the dog.", ["The cat is to the right of the dog."]),
        ("A lamp left of a bed.", ["A lamp right of a bed."]),
        ("Above the sink is a mirror.", ["Below the sink is a mirror."]),
        ("The cup is on top of the table.", ["The cup is under the table.", "The cup is beneath the table."]),
        ("A dog sleeps beneath the bench.", ["A dog sleeps on top of the bench."]),
        ("A car in front of a bus.", ["A car behind a bus."]),
        ("The cat is inside the box.", ["The cat is outside the box."]),
        ("The circle is bigger than the square.", ["The circle is smaller than the square."]),
        ("The circle is smaller than the square.",
         ["The circle is bigger than the square.", "The circle is larger than the square."]),
    ],
)
def test_swap_relations(text, expected):
    result = swap_relations(text, random.Random(0))
    assert result.corrupted in expected and result.category == "relation"
    check_spans(result)


def test_relations_need_whole_words():
    assert swap_relations("I understand the outsider's view.", random.Random(0)) is None
    result = swap_relations("A is above B and C is behind D.", random.Random(0), max_swaps=2)
    assert result.corrupted == "A is below B and C is in front of D."
    check_spans(result)


# ------------------------------------------------------------------------------------- None, seeds, registry


def test_nothing_swappable_gives_none():
    text = "A plain white background with nothing on it."
    rng = random.Random(0)
    assert swap_objects(text, ["circle"], SHAPES, rng) is None
    assert swap_attributes(text, ["circle"], SHAPES, rng) is None
    assert swap_relations(text, rng) is None
    assert inject(text, ["circle"], SHAPES, rng) is None
    # Every class present: nothing absent to swap in.
    assert swap_objects("There is a circle.", list(SHAPES.classes), SHAPES, rng) is None
    # The caption names only classes that are not in the image: no ground-truth mention to corrupt.
    assert swap_objects("There is a circle.", ["square"], SHAPES, rng) is None
    assert inject("There is a circle.", ["circle"], SHAPES, rng, categories=("relation",)) is None


def test_seeded_rng_is_deterministic(world):
    sources, _ = world
    for name, corruption in TEXT_CORRUPTIONS.items():
        outputs = set()
        for seed in range(6):
            runs = [corruption(s["caption"], s["objects"], SHAPES, random.Random(seed), max_swaps=2)
                    for s in sources]
            again = [corruption(s["caption"], s["objects"], SHAPES, random.Random(seed), max_swaps=2)
                     for s in sources]
            assert runs == again, name
            outputs.add(tuple(r.corrupted if r else None for r in runs))
        if name != "swap_relations":
            assert len(outputs) > 1, name  # the seed matters


def test_registry_and_record_dict():
    assert set(TEXT_CORRUPTIONS) == {"swap_objects", "swap_attributes", "swap_relations", "inject"}
    assert get_text_corruption("inject") is inject
    with pytest.raises(UnknownNameError, match="swap_objects"):
        get_text_corruption("swap_nouns")
    result = get_text_corruption("swap_relations")("A is left of B.", [], COCO, random.Random(0))
    row = json.loads(json.dumps(result.as_dict()))
    assert row["chosen_spans"] == [[5, 12]] and row["rejected_spans"] == [[5, 13]]
    assert row["swaps"][0]["before"] == "left of"
    with pytest.raises(ValueError, match="random, popular, adversarial"):
        swap_objects("a circle", ["circle"], SHAPES, random.Random(0), strategy="likely")
    with pytest.raises(ValueError, match="needs `frequencies`"):
        swap_objects("a dog", ["dog"], COCO, random.Random(0), strategy="popular")
    with pytest.raises(ValueError, match="color, size, count, position"):
        swap_attributes("a red dog", ["dog"], COCO, random.Random(0), kinds=("shape",))
