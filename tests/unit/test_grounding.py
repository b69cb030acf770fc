"""Grounding markup: every family's renderer against hand-worked strings, malformed markup, MiniGPT-v2 task
identifiers, and grounding SFT records from the shapes world (unambiguous, valid, deterministic).

Box arithmetic in the comments: `x / w` per coordinate, x with the width and y with the height.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from align.data.grounding import (
    GROUNDING_FORMATS,
    TASK_IDENTIFIERS,
    add_task_identifier,
    grounding_records,
    parse_grounding,
    render_grounding,
    render_record,
)
from align.data.schema import validate_records
from align.data.shapes import ShapesConfig, generate_shapes_world
from align.errors import DataError, UnknownNameError

REF = "<ref>the red circle</ref><bbox>24,1,42,19</bbox>"


# ------------------------------------------------------------------------------------------------ renderers

# 96x96 shapes image, the red circle at [24, 1, 42, 19] (x1, y1 exclusive).
#   shikra: 24/96 = 0.25 -> 0.250; 1/96 = 0.0104 -> 0.010; 42/96 = 0.4375, an exact binary tie, round-half-even
#           -> 0.438; 19/96 = 0.1979 -> 0.198. The box is glued to the phrase.
#   qwen:   floor(24000/96) = 250; floor(1000/96 = 10.4) = 10; floor(42000/96 = 437.5) = 437;
#           floor(19000/96 = 197.9) = 197.
#   minigptv2: floor(2400/96) = 25; floor(100/96 = 1.04) = 1; floor(4200/96 = 43.75) = 43; floor(1900/96 = 19.8) = 19.
#   ferret: no coordinate reaches 95 (= w - 1), so as qwen: 250, 10, 437, 197; phrase, space, box.
RED_CIRCLE = {
    "shikra": "the red circle[0.250,0.010,0.438,0.198]",
    "qwen": "<ref>the red circle</ref><box>(250,10),(437,197)</box>",
    "minigptv2": "<p>the red circle</p> {<25><1><43><19>}",
    "ferret": "the red circle [250, 10, 437, 197]",
    "none": "the red circle",
}

# 96x96, a blue square at [60, 48, 90, 70].
#   shikra: 60/96 = 0.625; 48/96 = 0.5; 90/96 = 0.9375 (tie, 7 is odd -> up) -> 0.938; 70/96 = 0.7292 -> 0.729.
#   qwen/ferret: 60000/96 = 625; 48000/96 = 500; 90000/96 = 937.5 -> 937; 70000/96 = 729.2 -> 729.
#   minigptv2: 6000/96 = 62.5 -> 62; 4800/96 = 50; 9000/96 = 93.75 -> 93; 7000/96 = 72.9 -> 72.
BLUE_SQUARE = {
    "shikra": "[0.625,0.500,0.938,0.729]",
    "qwen": "<box>(625,500),(937,729)</box>",
    "minigptv2": "{<62><50><93><72>}",
    "ferret": "[625, 500, 937, 729]",
}

# The whole 96x96 image [0, 0, 96, 96]: the exclusive right/bottom edge is the border.
#   shikra: 96/96 = 1 -> 1.000.  qwen: 96000/96 = 1000, clipped to 999 ([0, 1000)).
#   minigptv2: 9600/96 = 100, not clipped (MiniGPT-v2 writes 0..100).
#   ferret: regulate_box clips the pixel to 95 first: floor(95000/96 = 989.6) = 989.
WHOLE_IMAGE = {
    "shikra": "[0.000,0.000,1.000,1.000]",
    "qwen": "<box>(0,0),(999,999)</box>",
    "minigptv2": "{<0><0><100><100>}",
    "ferret": "[0, 0, 989, 989]",
}


@pytest.mark.parametrize("fmt", sorted(RED_CIRCLE))
def test_referred_phrase_and_box(fmt):
    text = f"It is {REF}."
    assert render_grounding(text, (96, 96), fmt) == f"It is {RED_CIRCLE[fmt]}."


def test_registry_entries_are_renderers():
    assert sorted(GROUNDING_FORMATS) == sorted(RED_CIRCLE)
    for fmt, expected in RED_CIRCLE.items():
        assert GROUNDING_FORMATS[fmt](REF, (96, 96)) == expected


@pytest.mark.parametrize("fmt", sorted(BLUE_SQUARE))
def test_bare_box(fmt):
    assert render_grounding("<bbox>60,48,90,70</bbox>", (96, 96), fmt) == BLUE_SQUARE[fmt]


@pytest.mark.parametrize("fmt", sorted(WHOLE_IMAGE))
def test_box_touching_the_border(fmt):
    assert render_grounding("<bbox>0,0,96,96</bbox>", (96, 96), fmt) == WHOLE_IMAGE[fmt]


def test_shikra_rounds_half_to_even_like_pythons_round():
    # [6, 18, 30, 40] on 96: 6/96 = 0.0625 (tie, 2 is even -> stays) -> 0.062; 18/96 = 0.1875 (7 odd -> up)
    # -> 0.188; 30/96 = 0.3125 (2 even) -> 0.312; 40/96 = 0.41667 -> 0.417. Shikra's round(x / w, 3) does this.
    assert render_grounding("<bbox>6,18,30,40</bbox>", (96, 96), "shikra") == "[0.062,0.188,0.312,0.417]"


def test_x_scales_with_width_and_y_with_height():
    # 200 wide, 100 high, [20, 10, 60, 90]: x 20/200 = 0.1, 60/200 = 0.3; y 10/100 = 0.1, 90/100 = 0.9.
    box = "<bbox>20,10,60,90</bbox>"
    assert render_grounding(box, (200, 100), "shikra") == "[0.100,0.100,0.300,0.900]"
    assert render_grounding(box, (200, 100), "qwen") == "<box>(100,100),(300,900)</box>"
    assert render_grounding(box, (200, 100), "minigptv2") == "{<10><10><30><90>}"
    assert render_grounding(box, (200, 100), "ferret") == "[100, 100, 300, 900]"


def test_integers_are_floored_exactly_not_through_floats():
    # 100x100, [29, 57, 58, 100]: exactly 29, 57, 58 on 0..100. In floats 29 / 100 * 100 = 28.999999999999996, so
    # MiniGPT-v2's own int(x / w * 100) would write 28, 56, 57; we floor the exact ratio.
    # qwen: 290, 570, 580, and 100000/100 = 1000 clipped to 999. ferret: 100 clipped to 99 -> 990.
    box = "<bbox>29,57,58,100</bbox>"
    assert render_grounding(box, (100, 100), "minigptv2") == "{<29><57><58><100>}"
    assert render_grounding(box, (100, 100), "qwen") == "<box>(290,570),(580,999)</box>"
    assert render_grounding(box, (100, 100), "ferret") == "[290, 570, 580, 990]"


def test_decimal_pixels():
    # 24.5/96 = 0.2552 -> 0.255 (shikra); floor(24500/96 = 255.2) = 255 (qwen); floor(2450/96 = 25.5) = 25.
    box = "<bbox>24.5,1,42,19</bbox>"
    assert render_grounding(box, (96, 96), "shikra") == "[0.255,0.010,0.438,0.198]"
    assert render_grounding(box, (96, 96), "qwen") == "<box>(255,10),(437,197)</box>"
    assert render_grounding(box, (96, 96), "minigptv2") == "{<25><1><43><19>}"


def test_adjacent_boxes_form_one_group():
    text = "<ref>two shapes</ref><bbox>24,1,42,19</bbox><bbox>60,48,90,70</bbox>"
    assert render_grounding(text, (96, 96), "shikra") == (
        "two shapes[0.250,0.010,0.438,0.198;0.625,0.500,0.938,0.729]")
    assert render_grounding(text, (96, 96), "qwen") == (
        "<ref>two shapes</ref><box>(250,10),(437,197)</box><box>(625,500),(937,729)</box>")
    assert render_grounding(text, (96, 96), "minigptv2") == (
        "<p>two shapes</p> {<25><1><43><19>}<delim>{<62><50><93><72>}")
    assert render_grounding(text, (96, 96), "ferret") == "two shapes [250, 10, 437, 197], [625, 500, 937, 729]"
    assert render_grounding(text, (96, 96), "none") == "two shapes"


def test_none_drops_boxes_with_the_spaces_before_them():
    text = "A circle <bbox>24,1,42,19</bbox> and a square <bbox>60,48,90,70</bbox>."
    assert render_grounding(text, (96, 96), "none") == "A circle and a square."
    assert render_grounding("<bbox>24,1,42,19</bbox> is red", (96, 96), "none") == "is red"
    assert render_grounding("first\n<bbox>24,1,42,19</bbox> then", (96, 96), "none") == "first\nthen"
    assert render_grounding("the region <bbox>24,1,42,19</bbox>?", (96, 96), "none") == "the region?"


def test_text_without_markup_is_unchanged():
    text = "A <b>bold</b> claim, 3 < 4, [0.1,0.2]."
    for fmt in GROUNDING_FORMATS:
        assert render_grounding(text, None, fmt) == text


def test_unknown_format_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="unknown grounding format 'kosmos'; known: ferret, minigptv2, "
                                               "none, qwen, shikra"):
        render_grounding(REF, (96, 96), "kosmos")


def test_image_size_must_be_positive_pixels():
    with pytest.raises(ValueError, match="image_size"):
        render_grounding(REF, (96, 0), "qwen")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("<bbox>24,1,42</bbox>", "needs 4 numbers x0,y0,x1,y1, got 3"),
        ("<bbox>24,1,42,19,5</bbox>", "needs 4 numbers x0,y0,x1,y1, got 5"),
        ("<bbox>24,1,42,x</bbox>", "'x' is not a non-negative number"),
        ("<bbox>-1,1,42,19</bbox>", "'-1' is not a non-negative number"),
        ("<bbox>42,1,24,19</bbox>", "needs x0 < x1 and y0 < y1"),
        ("<bbox>24,19,42,19</bbox>", "needs x0 < x1 and y0 < y1"),
        ("<bbox>24,1,97,19</bbox>", "lies outside the 96x96 image"),
        ("<bbox>24,1,42,100</bbox>", "lies outside the 96x96 image"),
        ("<bbox>24,1,42,19", "is not closed by </bbox>"),
        ("<bbox>24,1,<bbox>42,19</bbox>", "is not closed by </bbox>"),
        ("24,1,42,19</bbox>", "</bbox> without an opening <bbox>"),
        ("<ref>a <ref>b</ref></ref>", "a <ref> inside another <ref>"),
        ("<ref>the red circle", "<ref> is never closed"),
        ("the red circle</ref>", "</ref> without an opening <ref>"),
        ("<ref> </ref><bbox>24,1,42,19</bbox>", "an empty <ref></ref>"),
        ("<ref>circle <bbox>24,1,42,19</bbox></ref>", "a <bbox> inside <ref>"),
    ],
)
def test_malformed_markup_is_a_data_error(text, problem):
    with pytest.raises(DataError, match=re.escape(problem)):
        render_grounding(text, (96, 96), "qwen", path="train.jsonl", row=3, field="messages")
    with pytest.raises(DataError) as info:
        parse_grounding(text, (96, 96), path="train.jsonl", row=3, field="messages")
    assert (info.value.path, info.value.row, info.value.field) == ("train.jsonl", 3, "messages")


def test_a_box_without_an_image_size_is_an_error():
    with pytest.raises(DataError, match="needs the size of the example's first image"):
        render_grounding(REF, None, "shikra")


# ------------------------------------------------------------------------------------------------ records

def _record() -> dict:
    return {
        "id": "shapes_000001_ground1",
        "images": ["images/shapes_000001.png"],
        "messages": [
            {"role": "system", "content": "Answer with boxes."},
            {"role": "user", "content": [{"type": "image"},
                                         {"type": "text", "text": "What is in the region <bbox>60,48,90,70</bbox>?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": f"It is {REF}."}]},
            {"role": "user", "content": "And <ref>the square</ref>?"},
            {"role": "assistant", "content": "<bbox>60,48,90,70</bbox>"},
        ],
    }


def test_render_record_rewrites_every_text_item():
    record = _record()
    before = json.dumps(record)
    out = render_record(record, "qwen", [(96, 96)])
    assert json.dumps(record) == before  # the input is not changed
    assert out["id"] == record["id"] and out["images"] == record["images"]
    assert out["messages"] == [
        record["messages"][0],
        {"role": "user", "content": [{"type": "image"}, {"type": "text",
                                     "text": "What is in the region <box>(625,500),(937,729)</box>?"}]},
        {"role": "assistant", "content": [{"type": "text",
                                          "text": "It is <ref>the red circle</ref><box>(250,10),(437,197)</box>."}]},
        {"role": "user", "content": "And <ref>the square</ref>?"},
        {"role": "assistant", "content": "<box>(625,500),(937,729)</box>"},
    ]


def test_render_record_uses_the_first_image_size():
    record = _record()
    out = render_record(record, "minigptv2", [(96, 96), (500, 20)])
    assert out["messages"][4]["content"] == "{<62><50><93><72>}"


def test_render_record_errors_name_the_record_and_field():
    record = _record()
    record["messages"][4]["content"] = "<bbox>60,48,90</bbox>"
    with pytest.raises(DataError) as info:
        render_record(record, "ferret", [(96, 96)], path="sft.jsonl", row=7)
    assert (info.value.path, info.value.row, info.value.field) == ("sft.jsonl", 7, "messages")
    with pytest.raises(DataError, match="needs the size"):
        render_record(_record(), "ferret", [])


# ------------------------------------------------------------------------------------------- task identifiers


def test_the_six_minigptv2_identifiers():
    assert TASK_IDENTIFIERS == {
        "grounding": "[grounding] ", "refer": "[refer] ", "vqa": "[vqa] ",
        "caption": "[caption] ", "detection": "[detection] ", "identify": "[identify] ",
    }


def test_add_task_identifier_prefixes_each_user_turn():
    record = {
        "id": "a",
        "images": ["x.png"],
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Where is the red circle?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Top."}]},
            {"role": "user", "content": "And the square?"},
            {"role": "assistant", "content": "Bottom."},
        ],
    }
    out = add_task_identifier(record, "refer")
    assert [m["content"] for m in out["messages"]] == [
        "Be brief.",
        [{"type": "image"}, {"type": "text", "text": "[refer] Where is the red circle?"}],
        [{"type": "text", "text": "Top."}],
        "[refer] And the square?",
        "Bottom.",
    ]
    assert record["messages"][1]["content"][1]["text"] == "Where is the red circle?"  # not changed


def test_task_identifier_goes_after_leading_image_tokens():
    record = {"id": "a", "images": ["x.png"], "messages": [
        {"role": "user", "content": "<image>\nWhat colour is it?"},
        {"role": "assistant", "content": "Red."},
    ]}
    assert add_task_identifier(record, "vqa")["messages"][0]["content"] == "<image>\n[vqa] What colour is it?"


def test_image_only_turn_gets_the_identifier_as_text():
    record = {"id": "a", "images": ["x.png"], "messages": [
        {"role": "user", "content": [{"type": "image"}]},
        {"role": "assistant", "content": "A circle."},
    ]}
    content = add_task_identifier(record, "caption")["messages"][0]["content"]
    assert content == [{"type": "image"}, {"type": "text", "text": "[caption]"}]


def test_unknown_task_identifier_lists_the_known_ones():
    with pytest.raises(UnknownNameError, match="known: caption, detection, grounding, identify, refer, vqa"):
        add_task_identifier(_record(), "segment")


# ------------------------------------------------------------------------------------------ grounding records

# One image: a unique red circle and two green triangles (ambiguous by colour + class).
SOURCE = {
    "id": "shapes_000000",
    "images": ["images/shapes_000000.png"],
    "size": [96, 96],
    "objects": [
        {"name": "circle", "color": "red", "size": "small", "bbox": [24, 1, 42, 19]},
        {"name": "triangle", "color": "green", "size": "medium", "bbox": [50, 10, 70, 30]},
        {"name": "triangle", "color": "green", "size": "large", "bbox": [10, 50, 40, 90]},
    ],
}


def test_grounding_records_by_hand():
    records = grounding_records([SOURCE], n_per_image=2, seed=0)
    # Image 0 starts with the grounded caption, then the referring expression; the only unambiguous shape is
    # the red circle.
    assert records == [
        {
            "id": "shapes_000000_ground0",
            "images": ["images/shapes_000000.png"],
            "messages": [
                {"role": "user", "content": [
                    {"type": "image"},
                    {"type": "text", "text": "Describe the image and give the box of each shape."}]},
                {"role": "assistant", "content": [{"type": "text", "text":
                    "The image shows three shapes: <ref>a small red circle</ref><bbox>24,1,42,19</bbox>, "
                    "<ref>a medium green triangle</ref><bbox>50,10,70,30</bbox> and "
                    "<ref>a large green triangle</ref><bbox>10,50,40,90</bbox>."}]},
            ],
            "method": "grounding",
            "meta": '{"task": "grounding"}',
        },
        {
            "id": "shapes_000000_ground1",
            "images": ["images/shapes_000000.png"],
            "messages": [
                {"role": "user", "content": [
                    {"type": "image"},
                    {"type": "text", "text": "Where is the red circle? Give its bounding box."}]},
                {"role": "assistant", "content": [{"type": "text", "text":
                    "<ref>the red circle</ref><bbox>24,1,42,19</bbox>"}]},
            ],
            "method": "grounding",
            "meta": '{"object": 0, "task": "refer"}',
        },
    ]
    # Rendered for Shikra, the referring answer is the phrase with its box glued on.
    answer = render_record(records[1], "shikra", [(96, 96)])["messages"][1]["content"][0]["text"]
    assert answer == "the red circle[0.250,0.010,0.438,0.198]"


def test_region_captioning_names_the_shape_in_the_box():
    records = grounding_records([SOURCE], n_per_image=5, seed=0)
    regions = [r for r in records if json.loads(r["meta"])["task"] == "identify"]
    assert len(regions) == 3  # every shape, ambiguous or not: the box picks it
    phrases = {"a small red circle", "a medium green triangle", "a large green triangle"}
    for record in regions:
        obj = SOURCE["objects"][json.loads(record["meta"])["object"]]
        box = ",".join(map(str, obj["bbox"]))
        assert record["messages"][0]["content"][1]["text"] == f"What is in the region <bbox>{box}</bbox>?"
        assert record["messages"][1]["content"][0]["text"] == f"a {obj['size']} {obj['color']} {obj['name']}"
        phrases.discard(record["messages"][1]["content"][0]["text"])
    assert not phrases


def test_only_unambiguous_shapes_are_referred_to():
    twins = {**SOURCE, "objects": SOURCE["objects"][1:]}  # just the two green triangles
    records = grounding_records([twins], n_per_image=10, seed=0)
    tasks = [json.loads(r["meta"])["task"] for r in records]
    assert sorted(tasks) == ["grounding", "identify", "identify"]  # no "refer", and no duplicates


def test_grounding_records_need_the_image_size():
    source = {k: v for k, v in SOURCE.items() if k != "size"}
    with pytest.raises(DataError) as info:
        grounding_records([SOURCE, source])
    assert (info.value.row, info.value.field) == (2, "size")


def test_a_box_outside_the_image_is_an_error():
    source = {**SOURCE, "objects": [{"name": "circle", "color": "red", "bbox": [90, 1, 100, 19]}]}
    with pytest.raises(DataError, match="outside the 96x96 image") as info:
        grounding_records([source])
    assert (info.value.row, info.value.field) == (1, "objects")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("grounding") / "world"
    generate_shapes_world(ShapesConfig(n=16, seed=3, eval_fraction=0.25), out)
    return out


@pytest.fixture(scope="module")
def world_sources(world) -> list[dict]:
    lines = (world / "sources.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_world_records_are_valid_sft_records(world, world_sources):
    records = grounding_records(world_sources, n_per_image=3, seed=0)
    assert len(records) == 3 * len(world_sources) - sum(
        max(0, 3 - (1 + len(s["objects"]) + _n_unique(s))) for s in world_sources)
    assert validate_records(records, "sft", "grounding", base_dir=world) == len(records)
    assert {json.loads(r["meta"])["task"] for r in records} == {"grounding", "refer", "identify"}
    for record in records:  # every record renders in every family's format
        for fmt in GROUNDING_FORMATS:
            render_record(record, fmt, [(96, 96)])


def _n_unique(source: dict) -> int:
    keys = [(o["color"], o["name"]) for o in source["objects"]]
    return sum(keys.count(k) == 1 for k in keys)


def test_world_references_are_unambiguous_and_exact(world_sources):
    by_id = {s["id"]: s for s in world_sources}
    refer = [r for r in grounding_records(world_sources, n_per_image=3, seed=0)
             if json.loads(r["meta"])["task"] == "refer"]
    assert refer
    for record in refer:
        source = by_id[record["id"].rsplit("_ground", 1)[0]]
        question = record["messages"][0]["content"][1]["text"]
        color, name = re.fullmatch(r"Where is the (\w+) (\w+)\? Give its bounding box\.", question).groups()
        matches = [o for o in source["objects"] if (o["color"], o["name"]) == (color, name)]
        assert len(matches) == 1  # the phrase names exactly one shape in the image
        box = ",".join(map(str, matches[0]["bbox"]))
        assert record["messages"][1]["content"][0]["text"] == f"<ref>the {color} {name}</ref><bbox>{box}</bbox>"


def test_grounding_records_are_deterministic(world_sources):
    first = grounding_records(world_sources, n_per_image=2, seed=5)
    assert grounding_records(world_sources, n_per_image=2, seed=5) == first
    assert grounding_records(world_sources, n_per_image=2, seed=6) != first
