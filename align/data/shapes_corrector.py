"""The shapes world's exact corrector: a minimal revision of a model's description that fixes or removes each
wrong claim and leaves every other character as it was. It plays the expert of OPA-DPO and the annotator of
RLHF-V where the truth is known (`align build-pairs correct corrector=align.data.shapes_corrector:corrector`):
the model's own response is the rejected side, the revision the chosen side, and the changed segments are
exactly the wrong claims.

Sentence by sentence (a sentence ends at ".", "!", "?", ";" or a line break):
- a total count ("The image shows four shapes") gets the image's number of objects;
- a count of one class ("There are two circles") gets that class's number; a class the image lacks, or holds
  once, loses the sentence (no count of it is true to fix);
- a sentence about one object ("There is a small red circle in the top left", "A blue star is at the bottom")
  is matched to an object of its class not yet described, the one sharing most of the stated cell, colour and
  size; its wrong colour, size and position words are replaced by that object's. With no such object left (an
  absent class, or one more instance than the image has), an undescribed object in the stated cell was seen and
  misnamed: the class word (and any wrong colour or size) becomes that object's. Nothing there: the sentence goes;
- a sentence naming several shapes is kept when every claim in it holds and removed otherwise (a free-form
  sentence has no minimal fix that is certain to be grammatical);
- a sentence naming no shape is kept.
The world's short questions (existence, count, colour) are answered exactly instead (`short_answer`): a wrong
answer is replaced by the right one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from align.data import shapes_vocab as vocab

_SENTENCE = re.compile(r"[^.!?;\n]*[.!?;]?\n?")
_WORD = re.compile(r"[A-Za-z]+|\d+")
_ARTICLES = {"a": 1, "an": 1}
_WINDOW = 4  # words before a shape noun that may hold its count, colour and size ("two large red circles")


@dataclass
class _Word:
    text: str
    start: int
    end: int


@dataclass
class _Mention:
    """One shape noun of a sentence and the words that qualify it (indices into the sentence's words)."""

    name: str  # canonical class, or "" for a count of all shapes ("four shapes")
    plural: bool
    noun: tuple[int, int] = (0, 0)  # its first word and last word + 1
    count: tuple[int, int] | None = None  # (word index, value) of a number word before the noun
    color: tuple[int, str] | None = None
    size: tuple[int, str] | None = None
    position: tuple[int, int, str] | None = None  # (first word, last word + 1, cell)
    negated: bool = False
    edits: list[tuple[int, int, str]] = field(default_factory=list)  # (char start, end, replacement)


def _number(word: str) -> int | None:
    word = word.lower()
    return int(word) if word.isdigit() else vocab.NUMBERS.get(word)


def _mentions(words: list[_Word]) -> list[_Mention]:
    lower = [w.text.lower() for w in words]
    found: list[tuple[int, int, _Mention]] = []  # (first word, last word + 1, mention)
    i = 0
    while i < len(lower):
        two = " ".join(lower[i:i + 2])
        if two in vocab.PHRASES:
            name, width, plural = vocab.PHRASES[two], 2, False
        elif vocab.singularize(lower[i]) in vocab.SYNONYMS:
            singular = vocab.singularize(lower[i])
            name, width, plural = vocab.SYNONYMS[singular], 1, singular != lower[i]
        elif lower[i] in ("shape", "shapes") and i > 0 and _number(lower[i - 1]) is not None:
            name, width, plural = "", 1, lower[i] == "shapes"
        else:
            i += 1
            continue
        found.append((i, i + width, _Mention(name=name, plural=plural, noun=(i, i + width))))
        i += width
    for k, (first, last, mention) in enumerate(found):
        floor = found[k - 1][1] if k else 0
        for j in range(max(floor, first - _WINDOW), first):
            word = vocab.COLOR_SYNONYMS.get(lower[j], lower[j])
            if word in vocab.COLORS:
                mention.color = (j, word)
            elif word in vocab.SIZES:
                mention.size = (j, word)
            elif _number(word) is not None:
                mention.count = (j, _number(word))
            elif word in ("no", "not"):
                mention.negated = True
        ceiling = found[k + 1][0] if k + 1 < len(found) else len(lower)
        mention.position = vocab.position_at(lower, last, ceiling)
    return [m for _, _, m in found]


def _replace_word(words: list[_Word], index: int, text: str) -> list[tuple[int, int, str]]:
    """Replace word `index` by `text`, fixing an "a"/"an" just before it."""
    edits = [(words[index].start, words[index].end, text)]
    if index and words[index - 1].text.lower() in _ARTICLES:
        article = "an" if text[:1].lower() in "aeiou" else "a"
        if words[index - 1].text.lower() != article:
            before = words[index - 1]
            edits.append((before.start, before.end, article.capitalize() if before.text[0].isupper() else article))
    return edits


def _fix_object(mention: _Mention, obj: Mapping[str, Any], words: list[_Word], sentence: str) -> None:
    if mention.color and mention.color[1] != obj.get("color"):
        mention.edits += _replace_word(words, mention.color[0], str(obj["color"]))
    if mention.size and mention.size[1] != obj.get("size"):
        mention.edits += _replace_word(words, mention.size[0], str(obj["size"]))
    if mention.position and mention.position[2] != obj.get("cell"):
        first, last, cell = mention.position
        start, end = words[first].start, words[last - 1].end
        # The caption's own phrase ("in the top left") when the sentence has one around the position words, so
        # "at the top" becomes "in the bottom left" rather than "at the bottom left".
        for phrase in vocab.CELL_PHRASES.values():
            at = sentence.lower().rfind(phrase, 0, end)
            if at >= 0 and at + len(phrase) == end:
                mention.edits.append((at, end, vocab.CELL_PHRASES[obj["cell"]]))
                return
        mention.edits.append((start, end, obj["cell"].replace("-", " ")))


def _match(mention: _Mention, candidates: list[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The candidate that shares most of the stated cell (first), colour and size."""
    def agreement(obj: Mapping[str, Any]) -> int:
        return (4 * bool(mention.position and mention.position[2] == obj.get("cell"))
                + 2 * bool(mention.color and mention.color[1] == obj.get("color"))
                + bool(mention.size and mention.size[1] == obj.get("size")))
    return max(candidates, key=agreement)


def _correct_sentence(sentence: str, objects: Sequence[Mapping[str, Any]], described: list[int]) -> str | None:
    """The sentence with its wrong claims fixed, or None when it must go. `described` holds the indices of the
    objects earlier sentences described, and gains the one this sentence describes."""
    from align.data.shapes_claims import answer

    words = [_Word(m.group(0), m.start(), m.end()) for m in _WORD.finditer(sentence)]
    mentions = _mentions(words)
    if not mentions:
        return sentence
    if len(mentions) > 1 or mentions[0].negated:
        try:
            return sentence if answer(sentence, objects) else None
        except ValueError:
            return sentence
    mention = mentions[0]
    if not mention.name:  # "The image shows four shapes ..."
        total = len(objects)
        if mention.count and mention.count[1] != total:
            index = mention.count[0]
            number = str(total) if words[index].text.isdigit() else vocab.NUMBER_WORDS.get(total, str(total))
            mention.edits += _replace_word(words, index, number)
            noun = next(j for j in range(index + 1, len(words)) if words[j].text.lower() in ("shape", "shapes"))
            if (total == 1) == mention.plural:
                mention.edits.append((words[noun].start, words[noun].end, "shape" if total == 1 else "shapes"))
        return _apply(sentence, mention.edits)
    same_class = [k for k, o in enumerate(objects) if o.get("name") == mention.name]
    if mention.plural:  # "There are two circles": a count of the class
        stated = mention.count[1] if mention.count else None
        if len(same_class) < 2:
            return None
        if stated is not None and stated != len(same_class):
            index = mention.count[0]
            number = str(len(same_class)) if words[index].text.isdigit() else vocab.NUMBER_WORDS[len(same_class)]
            mention.edits += _replace_word(words, index, number)
        return _apply(sentence, mention.edits)
    free = [k for k in same_class if k not in described]
    if not free:
        # A wrong class where the sentence places an object not yet described: that object was seen and misnamed,
        # so the sentence is fixed to it. Nothing there: the object is absent and the sentence goes.
        there = [k for k, o in enumerate(objects) if k not in described and mention.position
                 and o.get("cell") == mention.position[2]]
        if not there:
            return None
        free = there
        first, last = mention.noun
        renamed = _replace_word(words, first, str(objects[there[0]]["name"]))
        renamed[0] = (words[first].start, words[last - 1].end, renamed[0][2])  # a two-word name goes whole
        mention.edits += renamed
    chosen = _match(mention, [objects[k] for k in free])
    described.append(next(k for k in free if objects[k] is chosen))
    _fix_object(mention, chosen, words, sentence)
    return _apply(sentence, mention.edits)


def _apply(text: str, edits: list[tuple[int, int, str]]) -> str:
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text


def correct_caption(response: str, objects: Sequence[Mapping[str, Any]], add_missing: bool = False) -> str:
    """`response` with each wrong claim about `objects` fixed or its sentence removed (the module docstring);
    every other character is kept, and a correct response comes back unchanged. With `add_missing`, a sentence
    for each object no sentence described is appended, in the caption's own words (OPA-DPO's expert adds
    missing facts too)."""
    described: list[int] = []
    kept: list[str] = []
    removed = False
    for match in _SENTENCE.finditer(response):
        text = match.group(0)
        if not text:
            continue
        body = text.lstrip()
        lead = text[:len(text) - len(body)]
        if not body.strip():
            kept.append(text)
            continue
        fixed = _correct_sentence(body, objects, described)
        if fixed is None:
            removed = True
        else:  # the sentence after a removed first one starts the text: no leading space
            kept.append((lead if kept or not removed else "") + fixed)
    revised = "".join(kept)
    if add_missing:
        missing = [f"There is a {o['size']} {o['color']} {o['name']} {vocab.CELL_PHRASES[o['cell']]}."
                   for k, o in enumerate(objects) if k not in described]
        if missing:
            revised = " ".join([revised.rstrip(), *missing]) if revised.strip() else " ".join(missing)
    return response if revised == response else revised.strip()


_COUNT_QUESTION = re.compile(r"how many (\w+(?: \w+)?) (?:are|is) there", re.IGNORECASE)
_COLOR_QUESTION = re.compile(r"what colou?r is the (\w+(?: \w+)?)\?", re.IGNORECASE)
_YES_NO = re.compile(r"^\s*(is|are|does|do)\b", re.IGNORECASE)


def short_answer(question: str, objects: Sequence[Mapping[str, Any]]) -> str | None:
    """The exact answer, in the world's words, to one of its short questions: existence ("Is there a star in the
    image?" -> Yes / No), count ("How many squares are there in the image?" -> 2) and colour of a class present
    once ("What color is the heart?" -> Orange); None for any other question (a caption request)."""
    from align.data.shapes_claims import answer

    question = question.split("\n")[0]
    count = _COUNT_QUESTION.search(question)
    if count:
        name = vocab.PHRASES.get(count.group(1).lower()) or vocab.SYNONYMS.get(vocab.singularize(count.group(1)))
        return str(sum(o.get("name") == name for o in objects)) if name else None
    color = _COLOR_QUESTION.search(question)
    if color:
        name = vocab.PHRASES.get(color.group(1).lower()) or vocab.SYNONYMS.get(vocab.singularize(color.group(1)))
        matching = [o for o in objects if o.get("name") == name]
        return str(matching[0]["color"]).capitalize() if len(matching) == 1 else None
    if _YES_NO.match(question):
        try:
            return "Yes" if answer(question, objects) else "No"
        except ValueError:
            return None
    return None


def correct_response(question: str, response: str, objects: Sequence[Mapping[str, Any]],
                     add_missing: bool = False) -> str:
    """A short question's wrong answer becomes the exact one (a right one, in any case or with a full stop, is
    left as it is); any other response is a description, corrected by `correct_caption`."""
    exact = short_answer(question, objects)
    if exact is None:
        return correct_caption(response, objects, add_missing)
    given = response.strip().rstrip(".").strip().lower()
    return response if given == exact.lower() else exact


def corrector(question: str, response: str, source: Mapping[str, Any]) -> str:
    """`correct_response` on the source row's `objects` (the signature of a `correct` builder's corrector)."""
    return correct_response(question, response, _objects(source))


def completing_corrector(question: str, response: str, source: Mapping[str, Any]) -> str:
    """`corrector` that also describes the objects a description left out (`add_missing`)."""
    return correct_response(question, response, _objects(source), add_missing=True)


def _objects(source: Mapping[str, Any]) -> list:
    objects = source.get("objects")
    if not isinstance(objects, list):
        raise ValueError("the source row has no objects to correct the response against")
    return objects
