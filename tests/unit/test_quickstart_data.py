"""The quickstart's data from a small shapes world: exactly what changes between chosen and rejected, which
captions get the hallucinated partner, and how sampled captions are ranked."""

from __future__ import annotations

import json

import pytest

from align.data.shapes import CLASS_COLORS, ShapesConfig, caption, generate_shapes_world
from align.data.shapes_vocab import NUMBER_WORDS
from align.eval.chair import caption_to_objects
from align.eval.shapes_chair import shapes_chair_vocab
from align.quickstart import data as qd


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs") / "world"
    generate_shapes_world(ShapesConfig(n=160, seed=5, max_objects=4), out)
    return out


def _mentions(text: str) -> list[str]:
    return caption_to_objects(text, shapes_chair_vocab()).objects


def _text(messages) -> str:
    return messages[-1]["content"][0]["text"]


def test_noisy_captions_add_the_absent_partner_only_where_an_anchor_lacks_it(world):
    sources = {s["id"]: s for s in qd.train_sources(world)}
    records, changed = qd.noisy_sft_records(world, noise=1.0, seed=0)
    original = {r["id"]: r for r in qd.read_jsonl(world / "sft.jsonl")}
    assert [r["id"] for r in records] == list(original)  # same conversations, same order
    baits = 0
    for record in records:
        source = sources.get(record["id"].rsplit("_", 1)[0])
        before, after = _text(original[record["id"]]["messages"]), _text(record["messages"])
        partners = qd.absent_partners(source["objects"]) if source else []
        if record["id"].endswith("_caption") and partners:
            baits += 1
            added = set(_mentions(after)) - set(_mentions(before))
            assert len(added) == 1 and added <= set(partners), (before, after)
            assert set(_mentions(before)) <= set(_mentions(after))
            # counted in the first sentence and named in a last one, after the true list
            n = len(source["objects"])
            assert after.startswith(before.split(" shape")[0].replace(NUMBER_WORDS[n], NUMBER_WORDS[n + 1]))
            assert after.split(". ")[1:-1] == before.rstrip(".").split(". ")[1:]
            assert _mentions(after.split(". ")[-1]) == list(added)
        else:
            assert after == before
    assert changed == baits > 0
    none, zero = qd.noisy_sft_records(world, noise=0.0, seed=0)
    assert zero == 0 and none == list(original.values())


def test_pairs_change_exactly_one_thing(world):
    sources = {s["id"]: s for s in qd.train_sources(world)}
    pairs = qd.preference_pairs(world, 120, seed=1)
    assert len(pairs) == 120
    kinds = {k: 0 for k in qd.PAIR_KINDS}
    for pair in pairs:
        source = sources[pair["id"].rsplit("-p", 1)[0]]
        kind = json.loads(pair["meta"])["kind"]
        kinds[kind] += 1
        chosen, rejected = _text(pair["chosen"]), _text(pair["rejected"])
        assert chosen == source["caption"] != rejected
        truth = {o["name"] for o in source["objects"]}
        said = set(_mentions(rejected))
        if kind == "add":  # every true class and one absent one
            assert truth < said and len(said - truth) == 1
            baits = qd.absent_partners(source["objects"])
            if baits:  # the bait partner is the hallucination of choice
                assert said - truth <= set(baits)
        elif kind == "drop":  # one object fewer: a shorter caption naming nothing new
            assert said <= truth and len(rejected) < len(chosen) and len(source["objects"]) >= 2
        else:  # swap: one object's class (a new class named) or its colour
            assert said != truth or _colours(chosen) != _colours(rejected)
    assert all(kinds.values())
    assert kinds["add"] > kinds["drop"] and kinds["add"] > kinds["swap"]  # 50 / 25 / 25
    assert qd.preference_pairs(world, 120, seed=1) == pairs


def _colours(text: str) -> list[str]:
    from align.data import shapes_vocab

    return [w.strip(".,") for w in text.split() if w.strip(".,") in shapes_vocab.COLORS]


def test_control_records_are_the_chosen_side(world):
    pairs = qd.preference_pairs(world, 10, seed=2)
    records = qd.chosen_sft_records(pairs)
    for pair, record in zip(pairs, records, strict=True):
        assert record["images"] == pair["images"]
        assert record["messages"] == [*pair["prompt"], *pair["chosen"]]
    assert caption  # the generator's caption function is what chosen texts come from


@pytest.fixture(scope="module")
def planted_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("qs-planted") / "world"
    generate_shapes_world(ShapesConfig(n=120, seed=6, max_objects=4, classes="planted", palette="by-class",
                                       placement="grid"), out)
    return out


def test_by_class_worlds_add_in_the_class_colour_and_only_the_world_classes(planted_world):
    assert qd.world_palette(planted_world) == CLASS_COLORS
    noisy, changed = qd.noisy_sft_records(planted_world, noise=1.0, seed=0)
    assert changed > 0
    pairs = qd.preference_pairs(planted_world, 150, seed=3)
    kinds = {json.loads(p["meta"])["kind"] for p in pairs}
    assert kinds == set(qd.PAIR_KINDS)
    texts = [_text(r["messages"]) for r in noisy if r["id"].endswith("_caption")]
    texts += [_text(p["rejected"]) for p in pairs if json.loads(p["meta"])["kind"] != "swap"]
    for text in texts:
        for sentence in text.split(". "):
            named = _mentions(sentence)
            assert set(named) <= set(CLASS_COLORS), text  # never one of the 4 classes this world leaves out
            if len(named) == 1 and _colours(sentence):  # "There is a small gray star ..." wears the star's colour
                assert _colours(sentence) == [CLASS_COLORS[named[0]]], text
    for pair in pairs:  # a swap names only world classes too, and keeps the count
        chosen, rejected = _text(pair["chosen"]).split(". "), _text(pair["rejected"]).split(". ")
        assert set(_mentions(" ".join(rejected))) <= set(CLASS_COLORS)
        if json.loads(pair["meta"])["kind"] == "swap":
            assert chosen[0] == rejected[0] and chosen != rejected
