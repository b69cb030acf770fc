"""The shapes world's RL task rows: every answer is exactly true for its image, and the task's reward pays the true
answer in full."""

from __future__ import annotations

from collections import Counter

import pytest

from align.data import shapes_rewards as rewards
from align.data import shapes_vocab as vocab
from align.data.io import read_jsonl as read_rows_and_lines


def read_jsonl(path) -> list[dict]:
    return read_rows_and_lines(path)[0]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from align.data.shapes import ShapesConfig, generate_shapes_world

    out = tmp_path_factory.mktemp("rl") / "world"
    generate_shapes_world(ShapesConfig(n=24, seed=5, image_size=64), out)
    return out


def _sources(world) -> dict:
    return {s["id"]: s for s in read_jsonl(world / "sources.jsonl")}


def _question(row) -> str:
    return row["prompt"][0]["content"][1]["text"]


def test_count_rows_are_true_and_every_fourth_asks_for_an_absent_class(world):
    sources = _sources(world)
    rows = read_jsonl(world / "rl_count.jsonl")
    assert len(rows) == sum(s["split"] == "train" for s in sources.values())
    for i, row in enumerate(rows):
        source = sources[row["id"].removesuffix("_count")]
        named = {vocab.PLURALS[c]: c for c in vocab.CLASSES}[_question(row).split()[2]]
        counts = Counter(o["name"] for o in source["objects"])
        assert row["answer"] == counts.get(named, 0)
        assert (row["answer"] == 0) == (i % 4 == 3), (i, row)
        assert row["images"] == source["images"] and row["task"] == "count"


def test_color_and_grounding_rows_name_an_object_the_image_holds_once(world):
    sources = _sources(world)
    for row in read_jsonl(world / "rl_color.jsonl") + read_jsonl(world / "rl_color_eval.jsonl"):
        source = sources[row["id"].removesuffix("_color")]
        name = _question(row).removeprefix("What color is the ").removesuffix("?")
        matching = [o for o in source["objects"] if o["name"] == name]
        assert len(matching) == 1 and row["answer"] == matching[0]["color"]
    grounding = read_jsonl(world / "rl_grounding.jsonl")
    assert grounding and read_jsonl(world / "rl_grounding_eval.jsonl")
    for row in grounding:
        source = sources[row["id"].removesuffix("_grounding")]
        color, name = _question(row).removeprefix("Where is the ").split("?")[0].split()
        matching = [o for o in source["objects"] if (o["color"], o["name"]) == (color, name)]
        assert len(matching) == 1 and row["box"] == matching[0]["bbox"] and row["image_size"] == source["size"]
        assert source["split"] == "train"


def test_the_true_answer_earns_the_full_reward(world):
    from align.data.grounding import render_grounding

    count = read_jsonl(world / "rl_count.jsonl")
    assert rewards.count([], [f"<answer>{r['answer']}</answer>" for r in count],
                         answer=[r["answer"] for r in count]) == [1.0] * len(count)
    color = read_jsonl(world / "rl_color.jsonl")
    assert rewards.color([], [f"It is {r['answer']}." for r in color],
                         answer=[r["answer"] for r in color]) == [1.0] * len(color)
    rows = read_jsonl(world / "rl_grounding.jsonl")
    written = [render_grounding("<bbox>{},{},{},{}</bbox>".format(*r["box"]), tuple(r["image_size"]), "qwen")
               for r in rows]
    scores = rewards.grounding_iou([], written, box=[r["box"] for r in rows],
                                   image_size=[r["image_size"] for r in rows])
    assert min(scores) > 0.9  # qwen's 0..999 grid on a 64 px image loses under a pixel per side


def test_rows_load_as_prompt_data_with_their_columns(world):
    from align.train.prompts import load_prompt_data

    prompts = load_prompt_data(world / "rl_grounding.jsonl")
    assert len(prompts) == len(read_jsonl(world / "rl_grounding.jsonl"))
    assert {"box", "image_size", "task"} <= set(prompts.records[0])


def test_caption_rows_carry_the_objects_and_the_worlds_own_caption_scores_every_class(world):
    """The world's template caption of an image is all true: the claim reward pays one per class it holds."""
    from align.eval.shapes_chair import claim_reward

    sources = _sources(world)
    rows = read_jsonl(world / "rl_caption.jsonl") + read_jsonl(world / "rl_caption_eval.jsonl")
    assert len(rows) == len(sources)
    truths = [sources[r["id"].removesuffix("_caption")] for r in rows]
    assert all(r["objects"] == s["objects"] and _question(r) == "Describe this image in detail." for r, s in
               zip(rows, truths, strict=True))
    scores = claim_reward([], [s["caption"] for s in truths], objects=[r["objects"] for r in rows])
    assert scores == [float(len({o["name"] for o in s["objects"]})) for s in truths]
