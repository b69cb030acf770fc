"""The word-level diff behind RLHF-V pairs (`align.data.diff.replaced_spans`), on hand-checked strings."""

from __future__ import annotations

import pytest

from align.data.diff import replaced_spans, units


def _texts(original, corrected, **kw):
    chosen, rejected = replaced_spans(original, corrected, **kw)
    return [corrected[a:b] for a, b in chosen], [original[a:b] for a, b in rejected]


def test_one_word_replaced_on_both_sides():
    assert _texts("There is a red car next to the tree.", "There is a blue car next to the tree.") == (
        ["blue"], ["red"])


def test_two_separate_corrections_are_two_segments_in_order():
    original = "A dog sits on a bench. The sky is green and the grass is tall."
    corrected = "A cat sits on a bench. The sky is blue and the grass is tall."
    # "A" is a one-word match, shorter than min_match, but at the start of both texts: outside any correction
    assert _texts(original, corrected) == (["cat", "blue"], ["dog", "green"])


def test_short_matches_inside_a_correction_join_the_segment():
    # "on the" matches between the two rewrites but is shorter than min_match=3: one segment on each side
    original = "The man stands on the red boat in the harbour."
    corrected = "The woman sits on the blue boat in the harbour."
    assert _texts(original, corrected) == (["woman sits on the blue"], ["man stands on the red"])
    # with min_match=1 every matching word survives and the words around it are separate segments
    assert _texts(original, corrected, min_match=1) == (["woman sits", "blue"], ["man stands", "red"])


def test_insertions_and_deletions_get_no_segment():
    # a corrector who only deletes a hallucinated clause (or only adds one) replaces nothing; the final "." is a
    # short match at the end of both texts, kept, so the deleted clause is a pure deletion
    assert _texts("A cat sleeps on a red sofa next to a lamp.", "A cat sleeps on a red sofa.") == ([], [])
    assert _texts("A cat sleeps.", "A cat sleeps on a red sofa.") == ([], [])
    # a one-word match in the middle is not kept: the clause around it is one replaced segment
    assert _texts("A cat sleeps near a red lamp today.", "A cat sleeps under a blue table today.") == (
        ["under a blue table"], ["near a red lamp"])


def test_punctuation_is_its_own_unit_and_spans_are_character_exact():
    original = "Two birds, one tree."
    corrected = "Three birds, one tree."
    chosen, rejected = replaced_spans(original, corrected)
    assert chosen == [(0, 5)] and rejected == [(0, 3)]
    assert [u[0] for u in units("isn't it? 3.5")] == ["isn't", "it", "?", "3", ".", "5"]


def test_identical_texts_have_no_segment_and_min_match_is_checked():
    assert replaced_spans("same text here", "same text here") == ([], [])
    with pytest.raises(ValueError, match="min_match"):
        replaced_spans("a", "b", min_match=0)
