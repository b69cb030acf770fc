"""Word-level diff of an original response and its corrected revision (RLHF-V's fine-grained correctional
feedback): the replaced segments on both sides, as [start, end) character spans.

RLHF-V's code (`get_diff_ids` in Muffin's `utils/diff_lib.py`) runs `difflib.SequenceMatcher` over the two
token-id sequences, discards matching blocks shorter than `min_match_size` (3), and keeps each gap between the
surviving blocks that is non-empty on both sides (a replacement; pure insertions and deletions get no weight).
Here the units are words and punctuation marks instead of one model's tokens, so the spans belong to the text
and serve any tokenizer (the DPO collator maps them onto each family's tokens). One difference: a short match at
the very start or end of both texts is kept, since it lies outside any correction (Muffin's rule would pull a
leading "The" into the first segment, and turn a deleted final clause into a replacement of the full stop).
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher

# A word (with an inner apostrophe: "isn't"), a number, or one punctuation mark.
_UNIT = re.compile(r"\w+(?:'\w+)*|[^\w\s]")

Span = tuple[int, int]


def units(text: str) -> list[tuple[str, int, int]]:
    """(unit, start, end) of every word and punctuation mark of `text`, in order."""
    return [(m.group(0), m.start(), m.end()) for m in _UNIT.finditer(text)]


def replaced_spans(original: str, corrected: str, min_match: int = 3) -> tuple[list[Span], list[Span]]:
    """(spans of `corrected`, spans of `original`): the k-th span of one side is the segment that replaced (or was
    replaced by) the k-th span of the other. Matching runs shorter than `min_match` units count as changed, so a
    correction that rewrites a clause is one segment rather than scattered words (a match at the start or end of
    both texts is always kept); a gap empty on either side (an insertion or a deletion) is no segment."""
    return _spans(original, corrected, min_match, one_sided=False)


def changed_spans(original: str, corrected: str, min_match: int = 3) -> tuple[list[Span], list[Span]]:
    """As `replaced_spans`, but an insertion is a span of `corrected` alone and a deletion a span of `original`
    alone, so every changed unit is marked (a removed hallucinated sentence weighs on the rejected side). The two
    lists then need not pair up."""
    return _spans(original, corrected, min_match, one_sided=True)


def _spans(original: str, corrected: str, min_match: int, one_sided: bool) -> tuple[list[Span], list[Span]]:
    if min_match < 1:
        raise ValueError(f"min_match must be >= 1, got {min_match}")
    a, b = units(original), units(corrected)
    matcher = SequenceMatcher(None, [u[0] for u in a], [u[0] for u in b], autojunk=False)
    kept = [block for block in matcher.get_matching_blocks()
            if block.size >= min_match or (block.size and (block.a == block.b == 0 or  # shared start
                                                           (block.a + block.size, block.b + block.size) == (len(a), len(b))))]
    corrected_spans: list[Span] = []
    original_spans: list[Span] = []
    prev_a = prev_b = 0
    for block_a, block_b, size in [(k.a, k.b, k.size) for k in kept] + [(len(a), len(b), 0)]:
        replaced = block_a > prev_a and block_b > prev_b  # units [prev, block) differ on both sides
        if block_a > prev_a and (replaced or one_sided):
            original_spans.append((a[prev_a][1], a[block_a - 1][2]))
        if block_b > prev_b and (replaced or one_sided):
            corrected_spans.append((b[prev_b][1], b[block_b - 1][2]))
        prev_a, prev_b = block_a + size, block_b + size
    return corrected_spans, original_spans
