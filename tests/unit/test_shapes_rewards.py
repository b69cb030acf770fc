"""The shapes world's verifiable rewards on hand-worked answers, and the grounding formats' box readers."""

from __future__ import annotations

import pytest

from align.data import shapes_rewards as rewards
from align.data.grounding import read_boxes, render_grounding


def _score(func, completions, **columns):
    return func(prompts=[[]] * len(completions), completions=completions, **columns)


def test_count_reads_the_first_number_in_digits_or_words():
    completions = ["There are three circles.", "<think>2 squares, 1 circle</think><answer>2</answer>",
                   "No circles at all.", "I count 4, no, 3.", "Twelve!", "Several shapes.",
                   [{"role": "assistant", "content": "3"}]]
    assert _score(rewards.count, completions, answer=["3", 2, "0", 3, 12, 1, "3"]) == [1, 1, 1, 0, 1, 0, 1]


def test_color_position_and_existence_read_the_first_word_that_answers():
    assert _score(rewards.color, ["It is grey.", "Red, or maybe blue.", "A violet star", "Round."],
                  answer=["Gray", "blue", "purple", "red"]) == [1, 0, 1, 0]
    assert _score(rewards.position, ["The star is in the upper left corner.", "At the top.", "In the middle.",
                                     "Top left or bottom right", "Nowhere."],
                  answer=["top-left", "top-left", "center", "bottom-right", "left"]) == [1, 0, 1, 0, 0]
    assert _score(rewards.existence, ["Yes, there is.", "No.", "Maybe.", "<answer>no</answer> yes"],
                  answer=["Yes", "yes", "no", "no"]) == [1, 0, 0, 1]


def test_box_iou_by_hand():
    # (10,10)-(30,30) and (20,20)-(40,40): 400 each, 10 x 10 = 100 shared, union 700.
    assert rewards.box_iou((10, 10, 30, 30), (20, 20, 40, 40)) == pytest.approx(1 / 7)
    assert rewards.box_iou((10, 10, 30, 30), (10, 10, 30, 30)) == 1.0
    assert rewards.box_iou((0, 0, 10, 10), (10, 0, 20, 10)) == 0.0  # touching edges share nothing
    assert rewards.box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


@pytest.mark.parametrize(("fmt", "written"), [
    ("qwen", "<ref>the star</ref><box>(200,200),(400,400)</box>"),
    ("shikra", "the star[0.200,0.200,0.400,0.400]"),
    ("minigptv2", "<p>the star</p> {<20><20><40><40>}"),
    ("ferret", "the star [200, 200, 400, 400]"),
])
def test_grounding_iou_reads_each_family_format(fmt, written):
    """A 100 x 100 image: every format above writes the box (20,20)-(40,40); the truth is (10,10)-(30,30)."""
    columns = {"box": [[10, 10, 30, 30]], "image_size": [[100, 100]]}
    assert _score(rewards.grounding_iou, [written], **columns) == [pytest.approx(1 / 7)]  # format detected
    assert _score(rewards.grounding_iou, [written], grounding_format=[fmt], **columns) == [pytest.approx(1 / 7)]
    assert read_boxes(written, fmt, (100, 100)) == [(20.0, 20.0, 40.0, 40.0)]


def test_grounding_iou_without_a_box_is_zero_and_reads_the_first_box():
    columns = {"box": [[10, 10, 30, 30]] * 2, "image_size": [[100, 100]] * 2}
    first_right = "<box>(100,100),(300,300)</box><box>(0,0),(50,50)</box>"
    assert _score(rewards.grounding_iou, ["Somewhere.", first_right], **columns) == [0.0, 1.0]


def test_box_readers_invert_the_writers_within_one_unit():
    """One unit of the family's scale (ferret: one pixel more, as it clips the right edge to side - 1)."""
    size = (96, 64)
    for fmt in ("qwen", "shikra", "minigptv2", "ferret"):
        text = render_grounding("<ref>a</ref><bbox>24,1,42,19</bbox><bbox>50,30,96,64</bbox>", size, fmt)
        boxes = read_boxes(text, fmt, size)
        unit = {"qwen": 0.001, "shikra": 0.001, "minigptv2": 0.01, "ferret": 0.001}[fmt]
        assert len(boxes) == 2, (fmt, text)
        for got, want in zip(boxes, [(24, 1, 42, 19), (50, 30, 96, 64)], strict=True):
            for g, w, side in zip(got, want, (96, 64, 96, 64), strict=True):
                assert abs(g - w) <= unit * side + (1 if fmt == "ferret" else 0) + 1e-9, (fmt, got, want)


def test_answer_format_wants_think_then_answer_and_nothing_else():
    assert _score(rewards.answer_format, ["<think>a</think>\n<answer>b</answer>", "<answer>b</answer>",
                                          "<think>a</think><answer>b</answer> more", "plain"]) == [1, 0, 0, 0]


def test_a_missing_or_short_column_names_itself():
    with pytest.raises(ValueError, match="'answer' column"):
        _score(rewards.count, ["3"])
    with pytest.raises(ValueError, match="2 'answer' values for 1 completions"):
        _score(rewards.count, ["3"], answer=[3, 4])
    with pytest.raises(ValueError, match="'image_size' column"):
        _score(rewards.grounding_iou, ["x"], box=[[0, 0, 1, 1]])
