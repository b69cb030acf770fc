"""The shapes world's exact corrector on hand-written captions with known wrong claims: each wrong claim is
fixed or its sentence removed, and every other character stays."""

from __future__ import annotations

import pytest

from align.data.shapes import caption
from align.data.shapes_corrector import correct_caption, corrector

OBJECTS = [
    {"name": "circle", "color": "red", "size": "small", "cell": "top-left"},
    {"name": "square", "color": "blue", "size": "large", "cell": "center"},
    {"name": "square", "color": "orange", "size": "medium", "cell": "bottom"},
]
EXACT = ("The image shows three shapes on a white background. There is a small red circle in the top left. "
         "There are two squares. A large blue square is in the center. A medium orange square is at the bottom.")


def test_the_exact_caption_comes_back_unchanged():
    assert caption(OBJECTS) == EXACT
    assert correct_caption(EXACT, OBJECTS) == EXACT
    odd = "  A small red circle is in the top left!\nNothing else.  "
    assert correct_caption(odd, OBJECTS) == odd  # right claims, whitespace and all


def test_a_hallucinated_partner_is_removed_and_the_total_fixed():
    response = EXACT.replace("three shapes", "four shapes") + " There is a small yellow star at the top."
    assert correct_caption(response, OBJECTS) == EXACT


def test_wrong_colour_size_position_and_count_are_replaced_in_place():
    response = ("The image shows three shapes on a white background. There is a large green circle in the bottom "
                "right. There are three squares. A large blue square is in the center. A medium red square is at "
                "the top.")
    # circle: colour, size and cell fixed; "three squares" -> two; the last square is the orange one at the bottom
    assert correct_caption(response, OBJECTS) == EXACT


def test_an_extra_instance_and_an_impossible_count_lose_their_sentence():
    response = ("The image shows three shapes on a white background. There are two circles. A small red circle is "
                "in the top left. A small red circle is at the top right.")
    assert correct_caption(response, OBJECTS) == (
        "The image shows three shapes on a white background. A small red circle is in the top left.")
    # a second circle where an undescribed square sits: that square, misnamed
    misnamed = response.replace("at the top right", "in the center")
    assert correct_caption(misnamed, OBJECTS) == (
        "The image shows three shapes on a white background. A small red circle is in the top left. A large blue "
        "square is in the center.")


def test_the_article_follows_a_replaced_colour_and_digits_stay_digits():
    objects = [{"name": "heart", "color": "orange", "size": "small", "cell": "left"}]
    assert correct_caption("There is a red heart on the left.", objects) == "There is an orange heart on the left."
    assert correct_caption("I see 3 shapes.", objects) == "I see 1 shape."


def test_a_position_word_outside_the_caption_phrases_becomes_the_cell():
    assert correct_caption("The circle sits near the lower right.", OBJECTS) == "The circle sits near the top left."
    assert correct_caption("A red circle is at the top.", OBJECTS) == "A red circle is in the top left."


def test_free_form_sentences_are_kept_when_true_and_removed_when_not():
    response = "A red circle and a blue square are here. A red circle and a green star are here. There is no star."
    assert correct_caption(response, OBJECTS) == "A red circle and a blue square are here. There is no star."
    assert correct_caption("It looks nice.\nThere is a star.", OBJECTS) == "It looks nice."
    assert correct_caption("There is a star.", OBJECTS) == ""


def test_the_builder_signature_needs_the_rows_objects():
    assert corrector("Describe.", "There is a star.", {"objects": OBJECTS}) == ""
    with pytest.raises(ValueError, match="no objects"):
        corrector("Describe.", "There is a star.", {"id": "x"})


def test_a_misnamed_object_in_its_stated_cell_is_renamed_and_one_in_an_empty_cell_removed():
    objects = [{"name": "diamond", "color": "orange", "size": "small", "cell": "center"}]
    assert correct_caption("There is a small red square in the center.", objects) == (
        "There is a small orange diamond in the center.")
    assert correct_caption("There is a small red square at the top.", objects) == ""
    # the stated cell's object is already described: the extra sentence goes
    assert correct_caption("A diamond is in the center. A square is in the center.", objects) == (
        "A diamond is in the center.")
    # a two-word synonym is replaced whole
    assert correct_caption("There is a half moon in the center.", objects) == "There is a diamond in the center."


def test_the_completing_corrector_also_describes_what_was_left_out():
    from align.data.shapes_corrector import completing_corrector

    partial = ("The image shows four shapes on a white background. There is a small red circle in the top left. "
               "There is a small green star on the right.")
    assert completing_corrector("Describe.", partial, {"objects": OBJECTS}) == (
        "The image shows three shapes on a white background. There is a small red circle in the top left. There is "
        "a large blue square in the center. There is a medium orange square at the bottom.")
    assert completing_corrector("Describe.", EXACT, {"objects": OBJECTS}) == EXACT  # nothing left out
    assert correct_caption(partial, OBJECTS).endswith("in the top left.")  # the plain corrector adds nothing


def test_short_questions_get_the_exact_answer_in_the_worlds_words():
    from align.data.shapes_corrector import short_answer

    suffix = "\nAnswer the question using a single word or phrase."
    assert short_answer("Is there a square in the image?" + suffix, OBJECTS) == "Yes"
    assert short_answer("Is there a star in the image?" + suffix, OBJECTS) == "No"
    assert short_answer("How many squares are there in the image?" + suffix, OBJECTS) == "2"
    assert short_answer("How many stars are there in the image?", OBJECTS) == "0"
    assert short_answer("What color is the circle?", OBJECTS) == "Red"
    assert short_answer("What color is the square?", OBJECTS) is None  # two squares: no one colour
    assert short_answer("Describe this image in detail.", OBJECTS) is None
    source = {"objects": OBJECTS}
    assert corrector("Is there a star in the image?" + suffix, "Yes", source) == "No"
    assert corrector("Is there a star in the image?" + suffix, "no.", source) == "no."  # right: unchanged
    assert corrector("How many squares are there in the image?", "3", source) == "2"
    assert corrector("Describe this image in detail.", EXACT + " There is a star.", source) == EXACT
