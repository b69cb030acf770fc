"""The caption claim reward (align.eval.shapes_chair.claim_reward) on hand-checked captions of one image."""

from __future__ import annotations

import pytest

from align.eval.shapes_chair import caption_claim_score, claim_reward

OBJECTS = [{"name": "hexagon", "color": "green", "size": "small", "cell": "top"},
           {"name": "cross", "color": "blue", "size": "medium", "cell": "top-right"},
           {"name": "circle", "color": "orange", "size": "large", "cell": "center"}]


@pytest.mark.parametrize("caption, score", [
    # hexagon, cross named and present (+2); green hexagon and top are true claims.
    ("There is a small green hexagon at the top. There is a blue cross.", 2),
    # hexagon, circle present (+2); star absent (-1); red hexagon (-1); two circles, the image has one (-1).
    ("There is a red hexagon. There are two circles. There is a star.", -1),
    # circle present (+1); it is in the center, not the top left (-1).
    ("The circle is in the top left.", 0),
    # A class named twice counts once; "3 crosses" is a wrong count.
    ("A cross. Another cross. 3 crosses.", 0),
    ("Nothing to see.", 0),
])
def test_caption_claim_score(caption, score):
    assert caption_claim_score(caption, OBJECTS) == score


def test_claim_reward_reads_each_rows_objects_and_the_answer_tags():
    completions = [[{"role": "assistant", "content": "<think>shapes</think><answer>A green hexagon.</answer>"}],
                   "There is a star."]
    assert claim_reward(None, completions, objects=[OBJECTS, OBJECTS]) == [1.0, -1.0]
    with pytest.raises(ValueError, match="'objects' column"):
        claim_reward(None, completions)
