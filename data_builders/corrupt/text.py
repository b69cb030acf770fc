"""Rule-based text corruptions: turn a correct description into a hallucinated one that differs only in marked
phrases (HALVA's phrase swaps, POVID's and BPO's injected errors).

Every corruption returns a `TextCorruption` (or None when the text has nothing it can change): the corrupted text,
the swaps, and the changed character spans on both sides, [start, end) pairs where `chosen_spans[k]` in the
original and `rejected_spans[k]` in the corrupted text hold the k-th swapped phrase. HALVA contrasts the k-th
hallucinated phrase with the k-th correct one and DDPO weights exactly these characters, so a span covers the
swapped words only: an article is inside it only when it changes ("a circle" -> "an ellipse"), and "'s" and
punctuation are always outside.

    swap_objects     an object mention -> an absent class (random, popular or adversarial, as POPE's negatives)
    swap_attributes  a colour/size adjective, a count before a plural noun, or a grid position phrase
    swap_relations   left of <-> right of, above <-> below, in front of <-> behind, ...
    inject           POVID/BPO injection: one of object / relation / attribute, whichever applies

`present` / `objects` is what the image holds: canonical names, or dicts {"name", "color", "size", "count",
"cell"} where attributes are known (a builder source's `objects`). Names are mapped through the vocabulary.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Any

from align.data.nouns import article
from align.data.vocab.vocabulary import RELATIONS, Vocabulary
from align.errors import lookup

OBJECT_STRATEGIES: tuple[str, ...] = ("random", "popular", "adversarial")
ATTRIBUTE_KINDS: tuple[str, ...] = ("color", "size", "count", "position")
INJECT_CATEGORIES: tuple[str, ...] = ("object", "relation", "attribute")

# Letters and digits; an apostrophe or hyphen ends a token, so "circle's" yields "circle" and the "'s" stays out.
_WORD_RE = re.compile(r"[A-Za-z0-9]+")
# Words before an invariant noun ("sheep", "scissors") that make it plural.
_PLURAL_CUES = frozenset({"many", "several", "some", "these", "those", "both", "all", "few", "multiple"})
# "in the top left of the image" is still a position; "on the left of the dog" is a relation.
_IMAGE_WORDS = frozenset({"image", "picture", "photo", "photograph", "frame", "scene"})
_COUNT_RANGE = range(2, 10)  # counts a swapped count may take: plural nouns need 2 or more
_COLOR_WINDOW = 2  # colour and size adjectives are read in the 2 tokens before a noun (the shapes/CHAIR rule)


# ---------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Swap:
    """One swapped phrase: `before` is original[chosen_span], `after` is corrupted[rejected_span]."""

    kind: str  # object | color | size | count | position | relation
    before: str
    after: str
    old: str  # the value taken out: class, colour, size, count, cell or relation phrase
    new: str  # the value put in


@dataclass(frozen=True)
class TextCorruption:
    original: str
    corrupted: str
    swaps: tuple[Swap, ...]
    chosen_spans: tuple[tuple[int, int], ...]
    rejected_spans: tuple[tuple[int, int], ...]
    category: str  # object | attribute | relation: what inject records as the POVID/BPO error type
    strategy: str | None = None  # the object strategy, when objects were swapped

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: spans as lists of [start, end) like the record contract's chosen_spans/rejected_spans."""
        return {
            "original": self.original,
            "corrupted": self.corrupted,
            "swaps": [asdict(s) for s in self.swaps],
            "chosen_spans": [list(s) for s in self.chosen_spans],
            "rejected_spans": [list(s) for s in self.rejected_spans],
            "category": self.category,
            "strategy": self.strategy,
        }


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    replacement: str
    kind: str
    old: str
    new: str


def _apply(text: str, edits: list[_Edit], category: str, strategy: str | None = None) -> TextCorruption | None:
    """Replace the (non-overlapping) edits left to right, tracking where each lands in the corrupted text."""
    if not edits:
        return None
    edits = sorted(edits, key=lambda e: e.start)
    pieces, chosen, rejected, swaps = [], [], [], []
    position, length = 0, 0  # position in the original; length of the corrupted text built so far
    for edit in edits:
        if edit.start < position:
            raise AssertionError(f"overlapping text edits at {edit.start}")  # a bug here, never the user's
        pieces.append(text[position:edit.start])
        length += edit.start - position
        chosen.append((edit.start, edit.end))
        rejected.append((length, length + len(edit.replacement)))
        pieces.append(edit.replacement)
        length += len(edit.replacement)
        position = edit.end
        swaps.append(Swap(edit.kind, text[edit.start:edit.end], edit.replacement, edit.old, edit.new))
    pieces.append(text[position:])
    return TextCorruption(text, "".join(pieces), tuple(swaps), tuple(chosen), tuple(rejected), category, strategy)


def _overlaps(edit: _Edit, edits: list[_Edit]) -> bool:
    return any(edit.start < e.end and e.start < edit.end for e in edits)


# --------------------------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class _Tokens:
    text: str
    spans: list[tuple[int, int]]
    words: list[str]  # lower case
    joined: list[bool]  # joined[i]: token i and i+1 are one phrase apart only by spaces or a single hyphen

    @classmethod
    def of(cls, text: str) -> _Tokens:
        spans = [m.span() for m in _WORD_RE.finditer(text)]
        words = [text[s:e].lower() for s, e in spans]
        joined = [_is_join(text[spans[i][1]:spans[i + 1][0]]) for i in range(len(spans) - 1)] + [False]
        return cls(text, spans, words, joined)

    def spaced(self, i: int) -> bool:
        """Token i and i+1 are separated by whitespace only (same phrase, no punctuation between)."""
        return i + 1 < len(self.spans) and self.text[self.spans[i][1]:self.spans[i + 1][0]].isspace()


def _is_join(gap: str) -> bool:
    return gap == "-" or (gap.isspace() and "\n" not in gap)


def _match_case(new: str, old: str) -> str:
    """Write `new` in the case of `old`: "Circle" -> "Heart", "TV" -> "CAT", "dog" -> "cat"."""
    if len(old) > 1 and old.isupper():
        return new.upper()
    if old[:1].isupper():
        return new[:1].upper() + new[1:]
    return new


def _article_fix(tokens: _Tokens, first: int, start: int, new_text: str) -> tuple[int, str] | None:
    """(start, new text) that also rewrites an "a"/"an" standing right before token `first` when the new word
    needs the other article; None when there is no such article or it stays right."""
    j = first - 1
    if j < 0 or tokens.words[j] not in ("a", "an") or not tokens.spaced(j):
        return None
    a_start, a_end = tokens.spans[j]
    old_article = tokens.text[a_start:a_end]
    wanted = article(new_text)
    if wanted == old_article.lower():
        return None
    return a_start, _match_case(wanted, old_article) + tokens.text[a_end:start] + new_text


# ------------------------------------------------------------------------------------------- mentions


@dataclass(frozen=True)
class Mention:
    """An object mention: [start, end) covers the noun (phrase) only; a CHAIR qualifier ("baby" in "baby bird")
    starts at `qualifier_start` and is not part of it."""

    start: int
    end: int
    cls: str
    plural: bool
    first: int  # index of the first token of [start, end)
    last: int  # index of the last token
    qualifier: str | None = None
    qualifier_start: int | None = None


@lru_cache(maxsize=16)
def _match_table(vocab: Vocabulary) -> dict[str, tuple[str, str | None, bool]]:
    """Surface form -> (rule, class, plural); rule is "object", "qualified" (only the last word names the
    object: "baby bird") or "block" (a phrase that hides its words: "home plate")."""
    table: dict[str, tuple[str, str | None, bool]] = {
        form: ("object", cls, plural) for form, (cls, plural) in vocab.forms.items()
    }
    for phrase, value in vocab.phrases.items():
        words = phrase.split()
        cls = vocab.synonyms.get(value)
        plural_phrase = " ".join([*words[:-1], vocab.plural(words[-1])])
        if cls is None:
            rule = ("block", None)
        elif value == words[-1] and len(words) > 1:
            rule = ("qualified", cls)
        else:
            rule = ("object", cls)
        table.setdefault(phrase, (*rule, False))
        table.setdefault(plural_phrase, (*rule, True))
    return table


def find_mentions(text: str, vocab: Vocabulary, tokens: _Tokens | None = None) -> list[Mention]:
    """Object mentions in reading order: longest match first over synonyms, plurals and two-word phrases, on
    word boundaries. A colour word that is also a class ("orange") standing before a noun is an adjective."""
    tokens = tokens or _Tokens.of(text)
    mentions: list[Mention] = []
    for first, last, (kind, cls, plural) in _longest_matches(tokens, _match_table(vocab), vocab.max_words):
        if kind == "object":
            mentions.append(_mention(tokens, first, last, cls, plural, vocab))
        elif kind == "qualified":
            m = _mention(tokens, last, last, cls, plural, vocab)
            mentions.append(replace(m, qualifier=tokens.words[first], qualifier_start=tokens.spans[first][0]))
    return _drop_adjectives(mentions, tokens, vocab)


def _longest_matches(tokens: _Tokens, table: Mapping[str, Any], longest: int):
    """(first token, last token, value) of each phrase of `table` in the tokens, left to right, longest match
    first, never overlapping; a phrase's words may be apart only by spaces or a single hyphen."""
    words, joined, n = tokens.words, tokens.joined, len(tokens.words)
    i = 0
    while i < n:
        for k in range(min(longest, n - i), 0, -1):
            if k > 1 and not all(joined[i:i + k - 1]):
                continue
            value = table.get(words[i] if k == 1 else " ".join(words[i:i + k]))
            if value is not None:
                yield i, i + k - 1, value
                i += k
                break
        else:
            i += 1


def _mention(tokens: _Tokens, first: int, last: int, cls: str, plural: bool, vocab: Vocabulary) -> Mention:
    if not plural and first > 0:
        # A noun that is its own plural ("sheep") is plural after a count above one or a plural determiner.
        surface = " ".join(tokens.words[first:last + 1])
        previous = tokens.words[first - 1]
        if vocab.plural(surface) == surface and (
            previous in _PLURAL_CUES or (_count_value(previous, vocab) or 0) > 1
        ):
            plural = True
    return Mention(tokens.spans[first][0], tokens.spans[last][1], cls, plural, first, last)


def _drop_adjectives(mentions: list[Mention], tokens: _Tokens, vocab: Vocabulary) -> list[Mention]:
    starts = {m.first for m in mentions}
    kept = []
    for m in mentions:
        nxt = m.last + 1
        is_color = m.first == m.last and vocab.color_value(tokens.words[m.first]) is not None
        if is_color and tokens.spaced(m.last) and (
            nxt in starts or vocab.color_value(tokens.words[nxt]) or vocab.size_value(tokens.words[nxt])
        ):
            continue
        kept.append(m)
    return kept


# ---------------------------------------------------------------------------------------- image objects


def _objects(present: Iterable[str | Mapping[str, Any]] | None, vocab: Vocabulary) -> list[dict[str, Any]]:
    """Image objects as dicts with a canonical "name" (an unknown name is kept as written, lower case)."""
    out = []
    for item in present or ():
        obj = {"name": item} if isinstance(item, str) else dict(item)
        name = str(obj.get("name", "")).lower()
        obj["name"] = vocab.canonical(name) or name
        out.append(obj)
    return out


def _values(objects: list[dict[str, Any]], cls: str, key: str, normalise: Callable[[str], Any]) -> set[Any]:
    return {normalise(str(o[key])) for o in objects if o["name"] == cls and o.get(key) is not None}


def _true_count(objects: list[dict[str, Any]], cls: str) -> int | None:
    of_class = [o for o in objects if o["name"] == cls]
    if not of_class:
        return None
    return sum(int(o.get("count") or 1) for o in of_class)


# ---------------------------------------------------------------------------------------- swap_objects


def swap_objects(
    text: str,
    present: Iterable[str | Mapping[str, Any]],
    vocab: Vocabulary,
    rng: random.Random,
    strategy: str = "random",
    max_swaps: int = 1,
    frequencies: Mapping[str, float] | None = None,
    cooccurrence: Mapping[str, Mapping[str, float]] | None = None,
) -> TextCorruption | None:
    """Swap up to `max_swaps` mentions of present objects for absent classes (HALVA; POVID's co-occurrence).

    The replacement class is never in the image nor named anywhere in the text, and is chosen like POPE's
    negatives: random (uniform over absent classes), popular (most frequent absent class in `frequencies`) or
    adversarial (the absent class co-occurring most with the swapped class, then with all present classes;
    random when none co-occurs). Mentions of one class share one replacement. With no `present` objects
    every mention may be swapped. None when no mention or no absent class is left.
    """
    frequencies, cooccurrence = _strategy_tables(strategy, vocab, frequencies, cooccurrence)
    tokens = _Tokens.of(text)
    objects = _objects(present, vocab)
    present_classes = {o["name"] for o in objects}
    mentions = find_mentions(text, vocab, tokens)
    candidates = [m for m in mentions if not present_classes or m.cls in present_classes]
    pool = [c for c in vocab.classes if c not in present_classes and c not in {m.cls for m in mentions}]
    if not candidates or not pool or max_swaps < 1:
        return None
    chosen = sorted(rng.sample(candidates, min(max_swaps, len(candidates))), key=lambda m: m.start)
    targets: dict[str, str] = {}
    for m in chosen:
        if m.cls not in targets and pool:
            targets[m.cls] = _pick_target(strategy, m.cls, pool, present_classes, rng, frequencies, cooccurrence,
                                          vocab)
            pool.remove(targets[m.cls])
    edits = [_object_edit(tokens, m, targets[m.cls], vocab) for m in chosen if m.cls in targets]
    return _apply(text, edits, "object", strategy)


def _strategy_tables(strategy, vocab, frequencies, cooccurrence):
    if strategy not in OBJECT_STRATEGIES:
        raise ValueError(f"unknown object strategy '{strategy}'; known: {', '.join(OBJECT_STRATEGIES)}")
    frequencies = frequencies if frequencies is not None else vocab.frequencies
    cooccurrence = cooccurrence if cooccurrence is not None else vocab.cooccurrence
    if strategy == "popular" and frequencies is None:
        raise ValueError(f"strategy 'popular' needs `frequencies` (class -> count); vocabulary '{vocab.name}' "
                         "has no default table")
    if strategy == "adversarial" and cooccurrence is None:
        raise ValueError(f"strategy 'adversarial' needs `cooccurrence` (class -> class -> count); vocabulary "
                         f"'{vocab.name}' has no default table")
    return frequencies, cooccurrence


def _pick_target(strategy, source, pool, present, rng, frequencies, cooccurrence, vocab) -> str:
    order = {c: i for i, c in enumerate(vocab.classes)}
    if strategy == "popular":
        return max(pool, key=lambda c: (frequencies.get(c, 0), -order[c]))
    if strategy == "adversarial":
        def score(c):
            with_source = cooccurrence.get(source, {}).get(c, 0)
            with_present = sum(cooccurrence.get(p, {}).get(c, 0) for p in present)
            return with_source, with_present

        ranked = [c for c in pool if any(score(c))]
        if ranked:
            freq = frequencies or {}
            return max(ranked, key=lambda c: (*score(c), freq.get(c, 0), -order[c]))
    return rng.choice(pool)  # random, and adversarial's fallback as in POPE


def _object_edit(tokens: _Tokens, m: Mention, target: str, vocab: Vocabulary) -> _Edit:
    word = vocab.display_name(target)
    if m.plural:
        word = vocab.plural(word)
    start, first = m.start, m.first
    if m.qualifier is not None and f"{m.qualifier} {vocab.display_name(target)}" not in vocab.phrases:
        # "baby car" would read "baby" as a person: the qualifier goes with the swapped noun.
        start, first = m.qualifier_start, m.first - 1
    replacement = _match_case(word, tokens.text[start:m.end])
    if not m.plural:
        fixed = _article_fix(tokens, first, start, replacement)
        if fixed:
            start, replacement = fixed
    return _Edit(start, m.end, replacement, "object", m.cls, target)


# ------------------------------------------------------------------------------------- swap_attributes


@dataclass(frozen=True)
class _Site:
    """A changeable attribute word or phrase: tokens [first, last], the value it states, the values it may take."""

    kind: str
    first: int
    last: int
    old: str
    choices: tuple[str, ...]


def swap_attributes(
    text: str,
    objects: Iterable[str | Mapping[str, Any]],
    vocab: Vocabulary,
    rng: random.Random,
    kinds: Iterable[str] = ATTRIBUTE_KINDS,
    max_swaps: int = 1,
) -> TextCorruption | None:
    """Change up to `max_swaps` attributes (POVID's entity attributes, BPO's colour/size/location errors): a colour
    or size adjective within 2 words before an object mention, a count word or digit before a plural mention, or a
    grid position phrase. The new value describes no object of that class in the image, where the objects carry
    that attribute. A kind is drawn first (uniform over the kinds the text offers), then a place."""
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in ATTRIBUTE_KINDS]
    if unknown:
        raise ValueError(f"unknown attribute kinds {unknown}; known: {', '.join(ATTRIBUTE_KINDS)}")
    tokens = _Tokens.of(text)
    objs = _objects(objects, vocab)
    mentions = find_mentions(text, vocab, tokens)
    # Sites are found lazily, a kind when first drawn: a draw that hits an empty kind is redrawn among the rest,
    # which is a uniform draw over the kinds the text offers, and a single swap rarely pays for every finder.
    sites: dict[str, list[_Site] | None] = dict.fromkeys(sorted(set(kinds), key=ATTRIBUTE_KINDS.index))
    edits: list[_Edit] = []
    while sites and len(edits) < max_swaps:
        kind = rng.choice(list(sites))
        if sites[kind] is None:
            sites[kind] = _SITE_FINDERS[kind](tokens, mentions, objs, vocab)
        found = sites[kind]
        if not found:
            del sites[kind]
            continue
        site = found.pop(rng.randrange(len(found)))
        edit = _attribute_edit(tokens, site, rng.choice(site.choices), vocab)
        if not _overlaps(edit, edits):
            edits.append(edit)
    return _apply(text, edits, "attribute")


def _adjective_sites(kind: str, tokens: _Tokens, mentions: list[Mention], objs, vocab: Vocabulary) -> list[_Site]:
    """Colour or size words in the 2 tokens before each mention, in the same phrase."""
    value_of = vocab.color_value if kind == "color" else vocab.size_value
    values = vocab.colors if kind == "color" else vocab.sizes
    sites, seen, previous_end = [], set(), -1
    for m in mentions:
        lead = m.first if m.qualifier is None else m.first - 1
        taken = _values(objs, m.cls, kind, lambda v: value_of(v) or v.lower())
        for j in range(lead - 1, max(lead - 1 - _COLOR_WINDOW, previous_end), -1):
            if not tokens.spaced(j):
                break
            old = value_of(tokens.words[j])
            if old and j not in seen:
                seen.add(j)
                choices = tuple(v for v in values if v != old and v not in taken)
                if choices:
                    sites.append(_Site(kind, j, j, old, choices))
        previous_end = m.last
    return sites


def _color_sites(tokens, mentions, objs, vocab):
    return _adjective_sites("color", tokens, mentions, objs, vocab)


def _size_sites(tokens, mentions, objs, vocab):
    return _adjective_sites("size", tokens, mentions, objs, vocab)


def _count_value(word: str, vocab: Vocabulary) -> int | None:
    if word.isdigit():
        return int(word)
    return vocab.numbers.get(word)


def _count_sites(tokens: _Tokens, mentions: list[Mention], objs, vocab: Vocabulary) -> list[_Site]:
    """A count right before a plural mention, with at most 2 colour/size words between ("two large circles")."""
    sites, previous_end = [], -1
    for m in mentions:
        lead = m.first if m.qualifier is None else m.first - 1
        if m.plural:
            for j in range(lead - 1, max(lead - 4, previous_end), -1):
                if not tokens.spaced(j):
                    break
                word = tokens.words[j]
                old = _count_value(word, vocab)
                if old is not None:
                    true = _true_count(objs, m.cls)
                    # A digit can take any count; a number word only one the vocabulary can write.
                    choices = tuple(str(n) for n in _COUNT_RANGE
                                    if n not in (old, true) and (word.isdigit() or _number_word(n, vocab)))
                    if choices:
                        sites.append(_Site("count", j, j, str(old), choices))
                    break
                if not (vocab.color_value(word) or vocab.size_value(word)):
                    break
        previous_end = m.last
    return sites


def _number_word(n: int, vocab: Vocabulary) -> str | None:
    return next((w for w, v in vocab.numbers.items() if v == n), None)


@lru_cache(maxsize=16)
def _position_table(vocab: Vocabulary) -> tuple[dict[str, str], int]:
    """Position phrases keyed by their words joined with single spaces ("top-left" -> "top left"), and the
    longest phrase in words."""
    table = {" ".join(re.split(r"[\s-]+", p)): cell for p, cell in vocab.positions.items()}
    return table, max((len(k.split()) for k in table), default=1)


def _position_sites(tokens: _Tokens, mentions: list[Mention], objs, vocab: Vocabulary) -> list[_Site]:
    """Grid phrases ("in the top left", "bottom right"); the new cell holds no object of a class named in the
    same sentence. A phrase followed by "of" is a relation ("on the left of the dog") unless "of the image"."""
    table, longest = _position_table(vocab)
    sites = []
    for first, last, cell in _longest_matches(tokens, table, longest):
        if not _followed_by_of(tokens.words, last):
            site = _position_site(tokens, first, last, cell, mentions, objs, vocab)
            if site:
                sites.append(site)
    return sites


def _followed_by_of(words: list[str], last: int) -> bool:
    after = words[last + 1:last + 4]
    return after[:1] == ["of"] and not (after[1:2] == ["the"] and after[2:3] and after[2] in _IMAGE_WORDS)


def _position_site(tokens, first, last, cell, mentions, objs, vocab) -> _Site | None:
    text, start = tokens.text, tokens.spans[first][0]
    lo = max(text.rfind(c, 0, start) for c in ".!?\n") + 1
    hi = min([j for j in (text.find(c, tokens.spans[last][1]) for c in ".!?\n") if j >= 0] or [len(text)])
    named = {m.cls for m in mentions if lo <= m.start < hi}
    taken = {o.get("cell") for o in objs if o["name"] in named}
    fits = _cell_shape(tokens, first, last)
    choices = tuple(c for c in vocab.cell_phrases if c != cell and c not in taken and fits(c))
    return _Site("position", first, last, cell, choices) if choices else None


def _cell_shape(tokens: _Tokens, first: int, last: int) -> Callable[[str], bool]:
    """Which cells read right in place of this phrase: only corners before "corner" and in a bare phrase
    ("top left" -> "center corner" does not), only edges before "side"/"edge", any cell otherwise."""
    following = tokens.words[last + 1] if last + 1 < len(tokens.words) and tokens.spaced(last) else ""
    if following in ("corner", "corners") or tokens.words[first] not in ("in", "at", "on"):
        return lambda c: "-" in c
    if following in ("side", "sides", "edge", "edges"):
        return lambda c: c in ("top", "bottom", "left", "right")
    return lambda c: True


_SITE_FINDERS = {"color": _color_sites, "size": _size_sites, "count": _count_sites, "position": _position_sites}


def _attribute_edit(tokens: _Tokens, site: _Site, new: str, vocab: Vocabulary) -> _Edit:
    start, end = tokens.spans[site.first][0], tokens.spans[site.last][1]
    old_text = tokens.text[start:end]
    if site.kind == "count" and not old_text.isdigit():
        word = _number_word(int(new), vocab)
    elif site.kind == "position":
        word = _position_text(old_text, new, vocab)
    else:
        word = new
    replacement = _match_case(word, old_text)
    fixed = _article_fix(tokens, site.first, start, replacement)
    if fixed:
        start, replacement = fixed
    return _Edit(start, end, replacement, site.kind, site.old, new)


def _position_text(old_text: str, cell: str, vocab: Vocabulary) -> str:
    """A cell written like the phrase it replaces: with its preposition, or bare ("top left" / "top-left")."""
    if old_text.split()[0].lower() in ("in", "at", "on"):
        return vocab.cell_phrases[cell]
    return cell if "-" in old_text else cell.replace("-", " ")


# ------------------------------------------------------------------------------------- swap_relations


@lru_cache(maxsize=16)
def _relation_regex(phrases: tuple[str, ...]) -> re.Pattern[str]:
    body = "|".join(r"\s+".join(map(re.escape, p.split())) for p in sorted(phrases, key=len, reverse=True))
    return re.compile(rf"\b(?:{body})\b", re.IGNORECASE)


def swap_relations(
    text: str,
    rng: random.Random,
    vocab: Vocabulary | None = None,
    max_swaps: int = 1,
) -> TextCorruption | None:
    """Reverse up to `max_swaps` spatial/comparative relations (POVID's logical relationships): left of <-> right
    of, above <-> below, on top of <-> under/beneath, in front of <-> behind, inside <-> outside, bigger/larger
    than <-> smaller than. Uses the vocabulary's relation table, or the English default without one."""
    relations = RELATIONS if vocab is None else vocab.relations
    matches = list(_relation_regex(tuple(relations)).finditer(text))
    if not matches or max_swaps < 1:
        return None
    chosen = sorted(rng.sample(matches, min(max_swaps, len(matches))), key=lambda m: m.start())
    edits = []
    for match in chosen:
        old = " ".join(match.group().lower().split())
        new = rng.choice(relations[old])
        edits.append(_Edit(match.start(), match.end(), _match_case(new, match.group()), "relation", old, new))
    return _apply(text, edits, "relation")


# --------------------------------------------------------------------------------------------- inject


def inject(
    text: str,
    present: Iterable[str | Mapping[str, Any]],
    vocab: Vocabulary,
    rng: random.Random,
    categories: Iterable[str] = INJECT_CATEGORIES,
    strategy: str | None = None,
    max_swaps: int = 1,
    frequencies: Mapping[str, float] | None = None,
    cooccurrence: Mapping[str, Mapping[str, float]] | None = None,
) -> TextCorruption | None:
    """POVID/BPO rule-based hallucination injection: one category drawn uniformly among those that apply to the
    text (object co-occurrence, logical relation, entity attribute); `category` on the result records which.

    Objects default to the adversarial strategy (POVID adds objects that typically co-occur) where a
    co-occurrence table is known, else random. None when no category applies.
    """
    categories = list(categories)
    unknown = [c for c in categories if c not in INJECT_CATEGORIES]
    if unknown:
        raise ValueError(f"unknown injection categories {unknown}; known: {', '.join(INJECT_CATEGORIES)}")
    if strategy is None:
        has_table = cooccurrence is not None or vocab.cooccurrence is not None
        strategy = "adversarial" if has_table else "random"
    # A shuffled order tried in turn picks uniformly among the categories that apply.
    rng.shuffle(categories)
    for category in categories:
        if category == "object":
            result = swap_objects(text, present, vocab, rng, strategy, max_swaps, frequencies, cooccurrence)
        elif category == "relation":
            result = swap_relations(text, rng, vocab, max_swaps)
        else:
            result = swap_attributes(text, present, vocab, rng, max_swaps=max_swaps)
        if result is not None:
            return result
    return None


# ------------------------------------------------------------------------------------------ registry


def _relations_entry(text, present, vocab, rng, **options):
    return swap_relations(text, rng, vocab, **options)


# Name -> corruption, all callable as fn(text, present, vocab, rng, **options).
TEXT_CORRUPTIONS: dict[str, Callable[..., TextCorruption | None]] = {
    "swap_objects": swap_objects,
    "swap_attributes": swap_attributes,
    "swap_relations": _relations_entry,
    "inject": inject,
}


def get_text_corruption(name: str) -> Callable[..., TextCorruption | None]:
    """A corruption by name; an unknown name is an error listing the known ones."""
    return lookup(TEXT_CORRUPTIONS, "text corruption", name)
