"""AMBER (Wang et al., 2023), the "LLM-free" benchmark: discriminative yes/no questions and generative
descriptions, scored as its `inference.py` does (docs/benchmarks.md, AMBER), without the spaCy similarity step ("AMBER-exact").

Questions file: AMBER's `data/annotations.json` (a JSON list, or JSONL) whose rows carry `id` and `type`:
- discriminative rows {"id", "type": "discriminative-hallucination" | "discriminative-attribute-state" |
  "discriminative-attribute-number" | "discriminative-attribute-action" | "discriminative-relation" | "relation",
  "truth": "yes" | "no"} (the short names existence, attribute-state, state, ... are accepted too);
- generative rows {"id", "type": "generative", "truth": [objects present], "hallu": [absent objects a model is
  likely to invent]}.
Answers: rows {"id" (or question_id), "response" (or text)}.

Discriminative metrics take "No" as the positive class: a "no" is the answer that catches a hallucination, so
an always-"yes" answerer has precision, recall and F1 of 0 however many questions it gets right.

Generative metrics need AMBER's `relation.json` (option relation=PATH): its keys and the words they map to are
the object vocabulary, and the words a key maps to count as that object. The safe words (never penalised)
default to AMBER's nine from `data/safe_words.txt`; safe_words=PATH reads another list, one word per line.

Which object a noun counts for follows the official script by default: the related words of every truth object
are checked before the objects' own names (match_order=official); match_order=direct checks the names first,
the reading align used before 0.2, which gives a higher Cover when a response names two linked objects.

All figures are percentages. Options (key=value): kind, relation, safe_words, normalize, lowercase, smoothing,
match_order (see `DEFAULTS` and `evaluate`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.errors import ConfigError, DataError
from align.eval.common import EvalResult, align_answers, answer_text, coerce_options, load_indexed
from align.files import read_json

BENCHMARK = "amber"
ID_FIELDS: tuple[str, ...] = ("question_id", "id")

# AMBER's data/safe_words.txt: words too ambiguous to penalise ("orange" the colour, "light" the adjective, ...).
SAFE_WORDS: tuple[str, ...] = ("orange", "snack", "line", "camera", "light", "shoe", "sign", "range", "individual")

GENERATIVE = "generative"
# Annotation type -> the discriminative block it is scored in. The relation dimension is two types: the
# "discriminative-relation" rows (truth yes) and the "relation" rows (truth no).
TYPE_BLOCKS: dict[str, str] = {
    "discriminative-hallucination": "existence",
    "discriminative-attribute-state": "attribute-state",
    "discriminative-attribute-number": "attribute-number",
    "discriminative-attribute-action": "attribute-action",
    "discriminative-relation": "relation",
    "relation": "relation",
    # short names, for question files written by hand or by other tools
    "existence": "existence",
    "attribute-state": "attribute-state",
    "attribute-number": "attribute-number",
    "attribute-action": "attribute-action",
    "state": "attribute-state",
    "number": "attribute-number",
    "action": "attribute-action",
}
ATTRIBUTE_BLOCKS: tuple[str, ...] = ("attribute-state", "attribute-number", "attribute-action")
# The order groups are reported in.
BLOCKS: tuple[str, ...] = ("existence", "attribute", *ATTRIBUTE_BLOCKS, "relation")

# What each `kind` option scores, and the official --evaluation_type letters as aliases.
KINDS: dict[str, frozenset[str]] = {
    "all": frozenset({GENERATIVE, "existence", *ATTRIBUTE_BLOCKS, "relation"}),
    "generative": frozenset({GENERATIVE}),
    "discriminative": frozenset({"existence", *ATTRIBUTE_BLOCKS, "relation"}),
    "existence": frozenset({"existence"}),
    "attribute": frozenset(ATTRIBUTE_BLOCKS),
    "relation": frozenset({"relation"}),
}
KIND_ALIASES: dict[str, str] = {"a": "all", "g": "generative", "d": "discriminative", "de": "existence",
                                "da": "attribute", "dr": "relation"}

# F1 = 2PR / (P + R + eps): the official code adds 1e-4, and 1e-3 in the existence block.
F1_EPS = 1e-4
EXISTENCE_F1_EPS = 1e-3

DEFAULTS: dict[str, Any] = {
    "kind": "all",  # which questions to score: all, generative, discriminative, existence, attribute, relation
    "relation": None,  # AMBER's data/relation.json (needed for generative scoring)
    "safe_words": None,  # a safe-word file, one word per line (default: AMBER's nine, SAFE_WORDS)
    "normalize": True,  # map a response whose first word is yes/no (any case) to "Yes"/"No" before scoring
    "lowercase": False,  # lower-case descriptions before matching nouns (the reference matches case-sensitively)
    "smoothing": 0.0,  # added to every denominator; 0.001 reproduces the official counters' starting values
    "match_order": "official",  # official: related words before names (AMBER's inference.py); direct: names first
}


# ------------------------------------------------------------------------------------------ discriminative


def parse_answer(text: str, normalize: bool = True) -> str:
    """The response as the official scorer sees it: it compares with "Yes" and "No" exactly and case-sensitively,
    and anything else is simply wrong (not a "No"). With `normalize`, a response whose first word is yes or no in
    any case ("yes", "No.", "Yes, there is") becomes "Yes"/"No" first, as the reference's exact comparison needs; "Not really" stays as
    written (its first word is "not")."""
    if not normalize:
        return text
    match = re.match(r"[\W_]*([A-Za-z]+)", text)
    word = match.group(1).lower() if match else ""
    return {"yes": "Yes", "no": "No"}.get(word, text)


def discriminative_metrics(pairs: Iterable[tuple[str, str]], eps: float = F1_EPS,
                           smoothing: float = 0.0) -> dict[str, float]:
    """accuracy, precision, recall, F1 (percent) of (truth "yes"/"no", parsed response) pairs, "No" positive.

    precision = (answered "No" and truth no) / answered "No"; recall = (truth no and answered "No") / truth no;
    F1 = 2PR / (P + R + eps) on the fractions. `smoothing` is added to each denominator (the official counters
    start at 0.001); with 0 an empty denominator gives 0."""
    total = correct = truth_no = answered_no = true_no = 0
    for truth, response in pairs:
        total += 1
        if response == "No":
            answered_no += 1
        if truth == "no":
            truth_no += 1
            if response == "No":
                true_no += 1
                correct += 1
        elif response == "Yes":
            correct += 1
    accuracy = _ratio(correct, total, smoothing)
    precision = _ratio(true_no, answered_no, smoothing)
    recall = _ratio(true_no, truth_no, smoothing)
    f1 = 2 * precision * recall / (precision + recall + eps)
    return {"accuracy": 100 * accuracy, "precision": 100 * precision, "recall": 100 * recall, "f1": 100 * f1}


# -------------------------------------------------------------------------------------------- generative

# WordNet's noun detachment rules (morphy), applied once; a candidate counts only if the lexicon knows it.
_NOUN_RULES: tuple[tuple[str, str], ...] = (
    ("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
    ("men", "man"), ("ies", "y"),
)
# Irregular plurals WordNet lists as exceptions and the rules above cannot undo.
_NOUN_EXCEPTIONS: dict[str, tuple[str, ...]] = {
    "children": ("child",), "feet": ("foot",), "teeth": ("tooth",), "geese": ("goose",), "mice": ("mouse",),
    "lice": ("louse",), "oxen": ("ox",), "knives": ("knife",), "wives": ("wife",), "lives": ("life",),
    "people": ("person",), "dice": ("die",), "calves": ("calf",), "leaves": ("leaf",), "loaves": ("loaf",),
    "halves": ("half",), "shelves": ("shelf",), "wolves": ("wolf",), "thieves": ("thief",),
}
_WORD = re.compile(r"[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*")


def lemmatize_noun(word: str, lexicon: Mapping[str, Any] | frozenset[str] | set[str]) -> str:
    """The noun lemma of `word` as WordNet's lemmatizer finds it, with `lexicon` standing in for WordNet: the
    word and its exception/suffix-rule forms are kept if the lexicon holds them, and the shortest wins ("glasses"
    -> "glass" when both are known, "bus" stays "bus"); a word with no known form is returned unchanged."""
    if word in _NOUN_EXCEPTIONS:
        forms = [word, *_NOUN_EXCEPTIONS[word]]
    else:
        forms = [word] + [word[: -len(old)] + new for old, new in _NOUN_RULES if word.endswith(old)]
    known = [form for form in forms if form in lexicon]
    return min(known, key=len) if known else word


def tokenize(text: str) -> list[str]:
    """Word tokens (letters/digits, hyphenated words kept whole), case kept: a stand-in for nltk.word_tokenize
    whose punctuation tokens never matter here."""
    return _WORD.findall(text)


def load_relation(path: str | Path) -> dict[str, list[str]]:
    """AMBER's relation.json: object -> the words that count as that object (e.g. "grass": ["ground"])."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"amber option relation: no such file {path}")
    loaded = read_json(path)
    if not isinstance(loaded, dict):
        raise DataError(path, "relation.json must map each object to a list of words")
    for key, words in loaded.items():
        if not isinstance(words, list) or not all(isinstance(word, str) for word in words):
            raise DataError(path, f"object {key!r} must map to a list of words", field=key)
    return {key: list(words) for key, words in loaded.items()}


def load_safe_words(path: str | Path) -> frozenset[str]:
    """A safe-word file: one word per line, blank lines ignored."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"amber option safe_words: no such file {path}")
    return frozenset(line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip())


def object_vocabulary(relation: Mapping[str, Sequence[str]]) -> frozenset[str]:
    """Every key of relation.json and every word it maps to: the only nouns AMBER scores."""
    return frozenset(relation) | frozenset(word for words in relation.values() for word in words)


def extract_nouns(text: str, vocabulary: frozenset[str], lowercase: bool = False) -> list[str]:
    """The vocabulary nouns of a description, in order, repeats kept: tokens lemmatized against the vocabulary
    and kept if the vocabulary holds the lemma. No part-of-speech filter (see `evaluate`'s notes)."""
    if lowercase:
        text = text.lower()
    nouns = []
    for token in tokenize(text):
        lemma = lemmatize_noun(token, vocabulary)
        if lemma in vocabulary:
            nouns.append(lemma)
    return nouns


@dataclass(frozen=True)
class ResponseScore:
    """What one description contributes: nouns scored, of which hallucinated; truth objects, of which covered;
    hallu-list objects, of which mentioned."""

    nouns: int
    hallucinated: int
    truth: int
    covered: int
    hallu: int
    mentioned: int


MATCH_ORDERS = ("official", "direct")


def _match(noun: str, objects: Sequence[str], relation: Mapping[str, Sequence[str]],
           match_order: str = "official") -> int | None:
    """Index of the object `noun` is counted for, or None.

    official (AMBER's `inference.py`): the related words of every object are checked before the objects' own
    names, in the list's order, so with truth [grass, ground] and relation grass -> [ground, ...], "ground"
    covers grass, and "ground" itself stays uncovered. direct: a noun that is an object's own name counts for
    that object first, then the related words (both grass and ground covered). Over 200 links of relation.json
    (person/man/woman, tree/forest, grass/ground) make `direct` score Cover higher than the official script."""
    related = [index for index, name in enumerate(objects) if noun in relation.get(name, ())]
    direct = [index for index, name in enumerate(objects) if noun == name]
    first, then = (related, direct) if match_order == "official" else (direct, related)
    return (first or then or [None])[0]


def score_response(nouns: Sequence[str], truth: Sequence[str], hallu: Sequence[str],
                   relation: Mapping[str, Sequence[str]], safe_words: Iterable[str] = SAFE_WORDS,
                   match_order: str = "official") -> ResponseScore:
    """AMBER's per-noun rule, exact matches only: a safe word is skipped (never hallucinated, but still a noun of
    the CHAIR denominator); a noun naming a truth object covers it and is correct; any other noun is hallucinated,
    and if it names a hallu-list object that object counts as mentioned (Cog). Which object a noun names follows
    `match_order` (see `_match`)."""
    if match_order not in MATCH_ORDERS:
        raise ConfigError(f"amber option match_order must be one of {', '.join(MATCH_ORDERS)}, got {match_order!r}")
    safe = frozenset(safe_words)
    covered, mentioned = set(), set()
    hallucinated = 0
    for noun in nouns:
        if noun in safe:
            continue
        index = _match(noun, truth, relation, match_order)
        if index is not None:
            covered.add(index)
            continue
        index = _match(noun, hallu, relation, match_order)
        if index is not None:
            mentioned.add(index)
        hallucinated += 1
    return ResponseScore(len(nouns), hallucinated, len(truth), len(covered), len(hallu), len(mentioned))


def generative_metrics(scores: Sequence[ResponseScore], smoothing: float = 0.0) -> dict[str, float]:
    """CHAIR, Cover, Hal, Cog (percent), each a micro average over the descriptions:
    CHAIR = hallucinated nouns / nouns; Cover = covered truth objects / truth objects; Hal = descriptions with a
    hallucinated noun / descriptions; Cog = mentioned hallu-list objects / hallu-list objects."""
    def total(name: str) -> int:
        return sum(getattr(score, name) for score in scores)

    return {
        "chair": 100 * _ratio(total("hallucinated"), total("nouns"), smoothing),
        "cover": 100 * _ratio(total("covered"), total("truth"), smoothing),
        "hal": 100 * _ratio(sum(score.hallucinated > 0 for score in scores), len(scores), smoothing),
        "cog": 100 * _ratio(total("mentioned"), total("hallu"), smoothing),
    }


def amber_score(chair: float, f1: float) -> float:
    """(100 - CHAIR + F1) / 2, the paper's single figure (both in percent)."""
    return (100 - chair + f1) / 2


# -------------------------------------------------------------------------------------------- evaluate


def evaluate(answers: str | Path, questions: str | Path | None = None, **options: Any) -> EvalResult:
    """Score AMBER answers against the annotations file `questions`.

    `kind` picks the questions scored (all, generative, discriminative, existence, attribute, relation, or the
    official letters a, g, d, de, da, dr); every question of that kind needs an answer, answers to other
    questions of the file are ignored, answers to ids not in the file are a DataError. Generative scoring needs
    relation=PATH. Metrics: chair, cover, hal, cog (generative); accuracy, precision, recall, f1 (all
    discriminative questions scored); amber_score when both are present. Groups: the discriminative blocks."""
    opts = coerce_options(options, DEFAULTS, BENCHMARK)
    kind = KIND_ALIASES.get(str(opts["kind"]), str(opts["kind"]))
    if kind not in KINDS:
        raise ConfigError(f"amber option kind must be one of {', '.join(KINDS)} (or {', '.join(KIND_ALIASES)}), "
                          f"got {opts['kind']!r}")
    if questions is None:
        raise ConfigError("amber needs --questions: AMBER's data/annotations.json (id, type, truth, hallu)")
    questions_index, answers_index = load_indexed(questions, ID_FIELDS), load_indexed(answers, ID_FIELDS)
    questions_path, by_question, numbers = questions_index.path, questions_index.rows, questions_index.lines
    answers_path, by_answer, answer_numbers = answers_index.path, answers_index.rows, answers_index.lines

    blocks = {key: _block(questions_path, numbers[id(row)], key, row) for key, row in by_question.items()}
    selected = {key: row for key, row in by_question.items() if blocks[key] in KINDS[kind]}
    if not selected:
        raise DataError(questions_path, f"no {kind} questions here (kind={kind})")
    extra = [key for key in by_answer if key not in by_question]
    if extra:
        raise DataError(answers_path, f"id {extra[0]!r} is not a question of {questions_path} ({len(extra)} such "
                        "answers)")
    keys = align_answers(answers_path, by_answer, questions_path, selected, allow_extra=True)

    generative = [key for key in keys if blocks[key] == GENERATIVE]
    relation: dict[str, list[str]] = {}
    if generative:
        if not opts["relation"]:
            raise ConfigError("amber generative scoring needs relation=PATH (AMBER's data/relation.json); "
                              "kind=discriminative scores the yes/no questions alone")
        relation = load_relation(opts["relation"])
    safe_words = load_safe_words(opts["safe_words"]) if opts["safe_words"] else frozenset(SAFE_WORDS)

    metrics: dict[str, float] = {}
    groups: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    notes: list[str] = []
    smoothing = float(opts["smoothing"])

    if generative:
        vocabulary = object_vocabulary(relation)
        scores = []
        for key in generative:
            row, answer = by_question[key], by_answer[key]
            truth = _word_list(questions_path, numbers[id(row)], key, row, "truth")
            hallu = _word_list(questions_path, numbers[id(row)], key, row, "hallu")
            text = answer_text(answers_path, answer_numbers[id(answer)], answer)
            scores.append(score_response(extract_nouns(text, vocabulary, opts["lowercase"]), truth, hallu,
                                         relation, safe_words, str(opts["match_order"])))
        metrics.update(generative_metrics(scores, smoothing))
        counts.update({
            "descriptions": len(scores), "nouns": sum(s.nouns for s in scores),
            "hallucinated_nouns": sum(s.hallucinated for s in scores), "truth_objects": sum(s.truth for s in scores),
            "covered_objects": sum(s.covered for s in scores), "hallu_objects": sum(s.hallu for s in scores),
            "mentioned_hallu_objects": sum(s.mentioned for s in scores),
        })
        notes.append("AMBER-exact: exact word matches only. The spaCy en_core_web_lg similarity step (> 0.8) is "
                     "skipped, so a noun only similar to a truth object counts as hallucinated and one only similar "
                     "to a hallu-list object does not raise Cog; a built-in tokenizer and WordNet-style suffix "
                     "lemmatizer replace NLTK, with no part-of-speech filter (a vocabulary word used as a verb or "
                     "adjective counts as a noun)" + ("" if opts["lowercase"] else "; matching is case-sensitive "
                                                      "as in the reference (a capitalised 'Dog' is not scored)"))

    discriminative = [key for key in keys if blocks[key] != GENERATIVE]
    if discriminative:
        pairs_by_block: dict[str, list[tuple[str, str]]] = {}
        unparsed = 0
        for key in discriminative:
            row, answer = by_question[key], by_answer[key]
            truth = _label(questions_path, numbers[id(row)], key, row)
            response = parse_answer(answer_text(answers_path, answer_numbers[id(answer)], answer),
                                    opts["normalize"])
            unparsed += response not in ("Yes", "No")
            pairs_by_block.setdefault(blocks[key], []).append((truth, response))
        all_pairs = [pair for block in pairs_by_block.values() for pair in block]
        metrics.update(discriminative_metrics(all_pairs, F1_EPS, smoothing))
        attribute = [pair for block in ATTRIBUTE_BLOCKS for pair in pairs_by_block.get(block, [])]
        if attribute:
            pairs_by_block["attribute"] = attribute
        for block in BLOCKS:
            if block in pairs_by_block:
                eps = EXISTENCE_F1_EPS if block == "existence" else F1_EPS
                groups[block] = discriminative_metrics(pairs_by_block[block], eps, smoothing)
                counts[block] = len(pairs_by_block[block])
        counts["discriminative_questions"] = len(all_pairs)
        counts["unparsed_answers"] = unparsed
        notes.append("discriminative: 'No' is the positive class; " + (
            "responses whose first word is yes/no are read as Yes/No, anything else is wrong" if opts["normalize"]
            else "responses are compared with 'Yes'/'No' exactly, as the official code does"))

    if generative and discriminative:
        metrics["amber_score"] = amber_score(metrics["chair"], metrics["f1"])
        notes.append("amber_score = (100 - CHAIR + F1) / 2 follows the AMBER paper; the official code does not "
                     "compute it")
    return EvalResult(BENCHMARK, metrics, groups, counts, notes)


def _ratio(numerator: float, denominator: float, smoothing: float) -> float:
    denominator = denominator + smoothing
    return numerator / denominator if denominator else 0.0


def _block(path: Path, number: int, key: Any, row: dict) -> str:
    kind = row.get("type")
    if kind is None:
        raise DataError(path, f"question {key!r} has no type", row=number, field="type")
    if kind == GENERATIVE:
        return GENERATIVE
    if not isinstance(kind, str) or kind not in TYPE_BLOCKS:
        raise DataError(path, f"question {key!r} has unknown type {kind!r}; AMBER's are generative, "
                        f"{', '.join(list(TYPE_BLOCKS)[:6])}", row=number, field="type")
    return TYPE_BLOCKS[kind]


def _label(path: Path, number: int, key: Any, row: dict) -> str:
    value = row.get("truth", row.get("label"))
    if not isinstance(value, str) or value.strip().lower() not in ("yes", "no"):
        raise DataError(path, f"question {key!r}: truth must be yes or no, got {value!r}", row=number,
                        field="truth")
    return value.strip().lower()


def _word_list(path: Path, number: int, key: Any, row: dict, name: str) -> list[str]:
    value = row.get(name)
    if not isinstance(value, list) or not all(isinstance(word, str) for word in value):
        raise DataError(path, f"generative question {key!r}: {name} must be a list of object words, got "
                        f"{value!r}", row=number, field=name)
    return value
