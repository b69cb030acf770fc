"""Character spans of a completion -> the completion tokens they touch (`char_spans_to_tokens`), hand-checked."""

from __future__ import annotations

import pytest

from align.train.dpo.data import char_spans_to_tokens


class PieceTokenizer:
    """Decodes token k to PIECES[k], so every character range below can be read off by hand."""

    def __init__(self, pieces):
        self.pieces = pieces

    def decode(self, ids, skip_special_tokens=False):
        return "".join(self.pieces[i] for i in ids)


# "There is a red circ le." as the model sees it: template tokens around the completion text.
PIECES = ["<|assistant|>", "There", " is", " a", " red", " circ", "le", ".", "</s>"]
TEXT = "There is a red circle."  # T=0..4 is=6..7 a=9 red=11..13 circle=15..20 .=21
IDS = list(range(len(PIECES)))


def test_a_word_maps_to_its_token():
    tok = PieceTokenizer(PIECES)
    # "red" = characters [11, 14); token 4 " red" covers [10, 14)
    assert char_spans_to_tokens(tok, IDS, TEXT, [[11, 14]]) == [4]


def test_a_word_split_over_two_tokens_marks_both():
    tok = PieceTokenizer(PIECES)
    # "circle" = [15, 21): " circ" covers [14, 19), "le" covers [19, 21)
    assert char_spans_to_tokens(tok, IDS, TEXT, [[15, 21]]) == [5, 6]


def test_a_span_touching_part_of_a_token_marks_it_and_several_spans_add_up():
    tok = PieceTokenizer(PIECES)
    # [0, 1) is "T" inside "There"; [20, 22) is "e." across "le" and "."
    assert char_spans_to_tokens(tok, IDS, TEXT, [[0, 1], [20, 22]]) == [1, 6, 7]


def test_template_tokens_are_never_marked():
    tok = PieceTokenizer(PIECES)
    marked = char_spans_to_tokens(tok, IDS, TEXT, [[0, len(TEXT)]])
    assert marked == [1, 2, 3, 4, 5, 6, 7]  # not "<|assistant|>" (0) nor "</s>" (8)


def test_a_completion_missing_from_its_tokens_is_an_error():
    with pytest.raises(ValueError, match="not found"):
        char_spans_to_tokens(PieceTokenizer(PIECES), IDS, "A blue square.", [[2, 6]])
