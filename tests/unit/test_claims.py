"""RLAIF-V's rule-based divide step (claims, yes/no questions) and the shapes world's exact labeler."""

from __future__ import annotations

import pytest

from align.data.claims import split_claims, yes_no_question
from align.data.shapes_claims import answer

OBJECTS = [{"name": "triangle", "color": "green", "size": "medium", "cell": "top-left"},
           {"name": "square", "color": "blue", "size": "small", "cell": "center"},
           {"name": "square", "color": "red", "size": "large", "cell": "bottom"}]


def test_split_claims_by_sentence_and_coordinated_clause():
    assert split_claims("A dog runs, and a cat sleeps; the sky is blue but grass is dry. Ok.") == [
        "A dog runs.", "A cat sleeps.", "The sky is blue.", "Grass is dry."]  # "Ok" is too short to be a claim


@pytest.mark.parametrize(("claim", "question"), [
    ("There is a red circle at the top.", "Is there a red circle at the top?"),
    ("There are two squares.", "Are there two squares?"),
    ("A large red circle is at the top.", "Is a large red circle at the top?"),
    ("The image shows three shapes.", "Is it true that the image shows three shapes?"),
])
def test_yes_no_question(claim, question):
    assert yes_no_question(claim) == question + " Please answer yes or no."


@pytest.mark.parametrize(("question", "expected"), [
    ("Is there a medium green triangle in the top left? Please answer yes or no.", True),
    ("Is there a green triangle in the center?", False),  # wrong position
    ("Is there a red triangle?", False),  # wrong colour
    ("Are there two squares?", True),
    ("Are there three squares?", False),
    ("Is there a small blue square in the middle?", True),  # "middle" is the center cell
    ("Is it true that the image shows three shapes on a white background?", True),
    ("Is it true that the image shows two shapes on a white background?", False),
    ("Is there no circle?", True),
    ("Is there a rhombus?", False),  # a synonym of diamond, absent
])
def test_shapes_labeler_answers_from_the_objects(question, expected):
    assert answer(question, OBJECTS) is expected


def test_shapes_labeler_refuses_a_question_it_cannot_check():
    with pytest.raises(ValueError, match="names no shape"):
        answer("Is the sky blue?", OBJECTS)
