"""CHAIR (Rohrbach et al., EMNLP 2018): which objects a caption mentions, and how many of them are not in the image.

The pipeline is CHAIR's `caption_to_words` (docs/benchmarks.md, CHAIR), with NLTK replaced by built-in rules so nothing is
downloaded:

1. `tokenize`: lower-case, then split like NLTK's `word_tokenize` (punctuation and clitics such as "'s" and "n't"
   become tokens; hyphens, slashes, apostrophes and periods inside a word keep it whole).
2. `singularize`: plural nouns to the singular, by an irregular table (people -> person, men -> man,
   knives -> knife, mice -> mouse, skis -> ski, ...) and suffix rules that prefer any candidate the vocabulary
   knows ("horses" -> "horse" not "hors", "buses" -> "bus", "collies" -> "collie"); words the vocabulary knows
   are left alone ("bus", "glass", "tennis", "sports", "people" aside).
3. merge two-word phrases left to right (`phrases`: "hot dog", "baby bird" -> "bird", "toilet seat" -> "toilet",
   "home plate" -> a non-object that hides "plate"); only pairs, never longer phrases;
4. exclusions: "toilet" anywhere in the caption drops every "seat" (a chair synonym);
5. keep the tokens that are synonyms and map each to its canonical class.

Where this can differ from the NLTK ports (OPERA/HALVA), by design:
- No part-of-speech tagger: verbs and adjectives are never lemmatized. OPERA lemmatizes tagged verbs, so there
  "skiing" -> "ski" (skis), "skateboarding" -> "skateboard", "seated" -> "seat" (chair), "tied" -> "tie",
  "training" -> "train", "bowling" -> "bowl", and "potted" may become "pot" (breaking "potted plant"); here they
  stay verbs, as in the original pattern.en version. Plural nouns the tagger mislabels come out the same here.
- Unknown words are singularized by suffix rules, not looked up in WordNet ("houses" -> "house" but
  "olives" -> "olive", "cookies" -> "cooky"); this never changes which vocabulary words are found.
- Tokens: every period not inside a word is split off (punkt keeps known abbreviations such as "mr." whole),
  double quotes stay `"` (NLTK writes `` and ''), "cannot" is "can" + "not". Only Len can move, by a token.
- pattern.en turned "glass" into "glas" (hence CHAIR's "wine glas" phrase) and "bus" into "bu", so the original
  never counts a singular bus; neither WordNet nor this does, so "wine glass(es)" merges directly and a singular
  bus counts. `reference_exact=true` restores the original's behaviour (and its synonym-list quirks).

Metrics (`chair_metrics`, OPERA's formulas): CHAIR_i and Recall are micro averages, repeated mentions
count each time, Len is the mean number of tokens after phrase merging (OPERA prints it x100 of a 0.01 scale,
i.e. this number). Ground truth per COCO image (`load_ground_truth`, 2.2): instance categories mapped through the
synonym table, union the objects found in the image's reference captions by the same pipeline.

The extraction core takes a `ChairVocab` (synonyms + two-word phrases + exclusions + safe words), so the shapes
benchmark runs the same pipeline with its own table (`ChairVocab.from_vocabulary(shapes_vocabulary())`).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, NamedTuple

from align.data.nouns import IRREGULAR_SINGULARS, singularize
from align.errors import ConfigError, DataError
from align.eval.common import (
    EvalResult,
    align_answers,
    answer_text,
    coerce_options,
    index_by_id,
    read_rows,
    safe_div,
)
from align.eval.pope import load_coco_objects, load_json_object

# ------------------------------------------------------------------------------------- tokenizer

# Clitics NLTK's Treebank tokenizer splits off ("there's" -> "there" "'s", "isn't" -> "is" "n't").
_CLITICS = re.compile(r"(?<=[^\W_])(n't|'s|'re|'ve|'ll|'d|'m)(?![^\W_])")
_CANNOT = re.compile(r"\bcannot\b")
# A word: letters/digits, joined by inner hyphens, slashes, apostrophes, ampersands or periods ("t-shirt",
# "and/or", "3.5"), or commas between digits ("1,000"); else "...", "--", a clitic, or any other single character.
_WORD = r"[^\W_]+(?:(?:[-/'.&]|,(?=\d))[^\W_]+)*"
_TOKEN = re.compile(rf"n't|'(?:s|re|ve|ll|d|m)\b|{_WORD}|\.\.\.|--|\S")


def tokenize(text: str, split_hyphens: bool = False) -> list[str]:
    """Lower-cased tokens of `text`, close to `nltk.word_tokenize(text.lower())` (differences: module docstring).

    `split_hyphens=True` also splits hyphenated words into their parts without the hyphen ("square-shaped" ->
    "square", "shaped"), which the shapes vocabulary asks for.
    """
    text = _CANNOT.sub("can not", text.lower())
    text = _CLITICS.sub(r" \1", text)
    tokens = _TOKEN.findall(text)
    if split_hyphens:
        tokens = [part for token in tokens for part in (token.split("-") if "-" in token[1:-1] else [token])
                  if part]
    return tokens


# ------------------------------------------------------------------------------------- vocabulary


@dataclass(frozen=True, eq=False)
class ChairVocab:
    """What the extraction needs to know about one vocabulary.

    synonyms: every surface word or multi-word entry (lower case) -> its canonical class. A multi-word entry is
        found only when `phrases` merges a token pair into it, as in CHAIR.
    phrases: two-word phrase -> the token it becomes; a synonym makes it a mention ("baby bird" -> "bird"), any
        other value hides its words ("home plate", "train track").
    exclusions: (trigger, dropped) pairs: when `trigger` is among the merged tokens, every `dropped` token goes
        (CHAIR's ("toilet", "seat")).
    safe_words: tokens never counted even if a synonym (AMBER-style generic words).
    irregular: the singularizer's irregular plurals; split_hyphens: see `tokenize`.
    strip_final_s: singularize as CHAIR's original `pattern.en.singularize` does in one respect that changes
        which COCO objects are found: a word ending in "s" that is already singular still loses the "s" ("bus" ->
        "bu", "minibus" -> "minibu", "glass" -> "glas"), so a singular bus is never counted while "buses" is
        (PATTERN_UNINFLECTED keeps its own word: "scissors"). Off by default: OPERA's and HALVA's ports
        lemmatize with WordNet, which keeps "bus".
    """

    synonyms: Mapping[str, str]
    phrases: Mapping[str, str] = field(default_factory=dict)
    exclusions: tuple[tuple[str, str], ...] = ()
    safe_words: frozenset[str] = frozenset()
    irregular: Mapping[str, str] = field(default_factory=lambda: dict(IRREGULAR_SINGULARS))
    split_hyphens: bool = False
    strip_final_s: bool = False

    @cached_property
    def known(self) -> frozenset[str]:
        """Every single word the vocabulary uses, so the singularizer never mangles one ("bus", "tennis")."""
        words: set[str] = set()
        for entry in (*self.synonyms, *self.phrases, *self.phrases.values()):
            words.update(entry.split())
        return frozenset(words)

    @classmethod
    def from_vocabulary(cls, vocab: Any, exclusions: Iterable[tuple[str, str]] = (),
                        irregular: Mapping[str, str] | None = None, split_hyphens: bool = False) -> ChairVocab:
        """From a `align.data.vocab.Vocabulary` (its synonyms, phrases and safe words); the vocabulary's own
        plural table is folded into the irregular singulars so its plurals always singularize back."""
        table = dict(IRREGULAR_SINGULARS if irregular is None else irregular)
        for singular, plural in getattr(vocab, "plurals", {}).items():
            if plural != singular and " " not in plural:
                table.setdefault(plural, singular)
        return cls(synonyms=dict(vocab.synonyms), phrases=dict(vocab.phrases), exclusions=tuple(exclusions),
                   safe_words=frozenset(getattr(vocab, "safe_words", frozenset())), irregular=table,
                   split_hyphens=split_hyphens)


COCO_EXCLUSIONS: tuple[tuple[str, str], ...] = (("toilet", "seat"),)


@lru_cache(maxsize=2)
def coco_chair_vocab(reference_exact: bool = False) -> ChairVocab:
    """COCO with CHAIR's synonym list and `double_word_dict` (shipped in align.data.vocab.coco).

    reference_exact=True keeps CHAIR's parse of the list: " motor bike" and " cheesecake" keep their leading
    space and "iPhone" its capital, so none of the three ever matches, exactly as in the reference code; and it
    singularizes as the original's pattern.en does, so a singular "bus" (also "airbus", "minibus") is never
    counted (`ChairVocab.strip_final_s`).
    The COCO irregular singulars here are CHAIR's own table, not the plural table of the pair builders.
    """
    from align.data.vocab.coco import coco_double_word_dict, coco_vocabulary

    vocab = coco_vocabulary(reference_exact)
    return ChairVocab(synonyms=dict(vocab.synonyms), phrases=coco_double_word_dict(), exclusions=COCO_EXCLUSIONS,
                      strip_final_s=reference_exact)


# -------------------------------------------------------------------------------------- extraction


class Mention(NamedTuple):
    """One object mention: the merged token that named it, its canonical class, its index in `words`."""

    word: str
    object: str
    position: int


class Extraction(NamedTuple):
    """`words`: the tokens after phrase merging (what Len counts); `mentions`: the objects, in caption order."""

    words: list[str]
    mentions: list[Mention]

    @property
    def objects(self) -> list[str]:
        """Canonical classes of the mentions, repeats kept (CHAIR's `node_words`)."""
        return [mention.object for mention in self.mentions]


def caption_to_objects(caption: str, vocab: ChairVocab) -> Extraction:
    """CHAIR's `caption_to_words`: tokenize, singularize, merge two-word phrases, apply the exclusions,
    keep the synonyms. Positions index `words` and stay right after exclusions (the reference's `idxs` shift)."""
    tokens = [_singular(token, vocab) for token in tokenize(caption, vocab.split_hyphens)]
    words: list[str] = []
    i = 0
    while i < len(tokens):
        pair = " ".join(tokens[i:i + 2])
        if i + 1 < len(tokens) and pair in vocab.phrases:
            words.append(vocab.phrases[pair])
            i += 2
        else:
            words.append(tokens[i])
            i += 1
    present = set(words)
    dropped = {drop for trigger, drop in vocab.exclusions if trigger in present}
    mentions = [Mention(word, vocab.synonyms[word], position) for position, word in enumerate(words)
                if word in vocab.synonyms and word not in dropped and word not in vocab.safe_words]
    return Extraction(words, mentions)


# Words pattern.en never singularizes, of those CHAIR's vocabulary holds.
PATTERN_UNINFLECTED = frozenset({"scissors"})


def _singular(token: str, vocab: ChairVocab) -> str:
    singular = singularize(token, vocab.known, vocab.irregular)
    if (vocab.strip_final_s and singular == token and token.endswith("s") and token.isalpha()
            and token not in PATTERN_UNINFLECTED):
        return token[:-1]
    return singular


# ---------------------------------------------------------------------------------------- metrics


def chair_metrics(objects: Sequence[Sequence[str]], truths: Sequence[Collection[str]],
                  lengths: Sequence[int] | None = None) -> dict[str, float]:
    """CHAIR over captions: `objects[k]` the canonical mentions of caption k (repeats kept), `truths[k]` its
    image's ground-truth classes, `lengths[k]` its token count after merging.

    chair_i = hallucinated mentions / mentions (all captions pooled; a mention is hallucinated when its class is
    not in the truth, and every repeat counts); chair_s = captions with a hallucinated mention / captions;
    recall = sum of distinct correctly mentioned classes / sum of truth-set sizes; len = mean tokens per caption;
    chair_s_refine (RLAIF-V) = hallucinated captions / captions with at least one mention. Every ratio is 0.0
    on an empty denominator. The counts behind them come back too (as numbers in the same dict).
    """
    if len(objects) != len(truths) or (lengths is not None and len(lengths) != len(objects)):
        raise ValueError("objects, truths and lengths need one entry per caption")
    mentions = hallucinated = bad_captions = with_mentions = recalled = truth_size = 0
    for found, truth in zip(objects, truths, strict=True):
        truth_set = set(truth)
        wrong = sum(obj not in truth_set for obj in found)
        mentions += len(found)
        hallucinated += wrong
        bad_captions += wrong > 0
        with_mentions += bool(found)
        recalled += len(set(found) & truth_set)
        truth_size += len(truth_set)
    captions = len(objects)
    return {
        "chair_i": safe_div(hallucinated, mentions),
        "chair_s": safe_div(bad_captions, captions),
        "recall": safe_div(recalled, truth_size),
        "len": safe_div(sum(lengths), captions) if lengths is not None else 0.0,
        "chair_s_refine": safe_div(bad_captions, with_mentions),
        "captions": captions, "mentions": mentions, "hallucinated_mentions": hallucinated,
        "hallucinated_captions": bad_captions, "captions_with_mentions": with_mentions,
        "recalled_objects": recalled, "gt_objects": truth_size,
    }


def score_captions(captions: Sequence[str], truths: Sequence[Collection[str]],
                   vocab: ChairVocab) -> dict[str, float]:
    """`chair_metrics` of raw captions against their truth sets: the whole pipeline for any vocabulary."""
    extractions = [caption_to_objects(caption, vocab) for caption in captions]
    return chair_metrics([e.objects for e in extractions], truths, [len(e.words) for e in extractions])


# ----------------------------------------------------------------------------------- ground truth


def load_ground_truth(instances: Sequence[str | Path] = (), captions: Sequence[str | Path] = (),
                      vocab: ChairVocab | None = None,
                      image_ids: Collection[Hashable] | None = None) -> dict[Any, set[str]]:
    """{COCO image id: canonical classes} (docs/benchmarks.md, CHAIR: Ground truth): instance categories through the synonym table, union the
    objects the image's reference captions mention. Several files of a kind are merged (train + val).

    Every image the files know gets an entry, even an empty one (COCO has images without instances), so a
    missing key means "not in these annotations". `image_ids` limits the work to those images (extracting every
    caption of train2014 is slow and changes nothing for the others).
    """
    vocab = vocab or coco_chair_vocab()
    wanted = None if image_ids is None else set(image_ids)
    truth: dict[Any, set[str]] = {}
    for path in instances:
        for image_id, names in load_coco_objects(path).items():
            if wanted is not None and image_id not in wanted:
                continue
            found = truth.setdefault(image_id, set())
            for name in names:
                canonical = vocab.synonyms.get(name) or vocab.synonyms.get(name.lower())
                if canonical is None:
                    raise DataError(path, f"category {name!r} (image_id {image_id!r}) is not in the CHAIR "
                                    "vocabulary; is this a COCO instances file?")
                found.add(canonical)
    for path in captions:
        for image_id, texts in _load_coco_captions(Path(path)).items():
            if wanted is not None and image_id not in wanted:
                continue
            found = truth.setdefault(image_id, set())
            for text in texts:
                found.update(caption_to_objects(text, vocab).objects)
    return truth


def _load_coco_captions(path: Path) -> dict[Any, list[str]]:
    """{image id: reference captions} of a COCO captions file (images without captions get an empty list)."""
    data = load_json_object(path)
    out: dict[Any, list[str]] = {}
    for number, image in enumerate(data.get("images", []), start=1):
        if not isinstance(image, dict) or "id" not in image:
            raise DataError(path, "an image needs an id", row=number, field="images")
        out.setdefault(image["id"], [])
    for number, annotation in enumerate(data.get("annotations", []), start=1):
        if not isinstance(annotation, dict) or "image_id" not in annotation:
            raise DataError(path, "a caption annotation needs an image_id", row=number, field="annotations")
        caption = annotation.get("caption")
        if not isinstance(caption, str):
            raise DataError(path, f"annotation {annotation.get('id', number)!r} (image_id "
                            f"{annotation['image_id']!r}) has no caption string", row=number, field="annotations")
        out.setdefault(annotation["image_id"], []).append(caption)
    return out


# -------------------------------------------------------------------------------------- evaluate

DEFAULTS: dict[str, Any] = {
    "instances": "",           # COCO instances_*.json, comma-separated to merge several (train + val)
    "captions": "",            # COCO captions_*.json, likewise
    "reference_exact": False,  # CHAIR's original quirks: synonym parse (" motor bike", ...), singular "bus" never counted
}
_HEADLINE = ("chair_i", "chair_s", "recall", "len")
_COCO_FILE = re.compile(r"(\d+)\.\w+$")


def image_key(value: Any) -> Any:
    """A COCO image id from what answer files write: 42, "42" or "COCO_val2014_000000000042.jpg" -> 42."""
    if isinstance(value, str):
        if value.strip().isdigit():
            return int(value)
        match = _COCO_FILE.search(value)
        if match:
            return int(match.group(1))
    return value


def evaluate(answers: str | Path, questions: str | Path | None = None, **options: Any) -> EvalResult:
    """CHAIR_i, CHAIR_s, Recall and Len of captions (`{image_id, caption}` rows, or `{question_id, text}`).

    Without `questions`, each answer's id is its image (`image_id`, else `question_id`). With a question file
    (`{question_id, image_id | image}`), answers join it by `question_id` and take the question's image; every
    question needs an answer. Options: `instances` and `captions` (COCO annotation files; at least one, both for
    the reference ground truth) and `reference_exact`. An image the annotations do not know is a DataError.
    """
    opts = coerce_options(options, DEFAULTS, "chair")
    instance_paths = [p.strip() for p in str(opts["instances"]).split(",") if p.strip()]
    caption_paths = [p.strip() for p in str(opts["captions"]).split(",") if p.strip()]
    if not instance_paths and not caption_paths:
        raise ConfigError("chair needs COCO annotations: instances=instances_val2014.json and "
                          "captions=captions_val2014.json")
    vocab = coco_chair_vocab(bool(opts["reference_exact"]))

    answer_rows = read_rows(answers)
    numbers: dict[Any, int]
    if questions is None:
        by_id = index_by_id(answers, answer_rows, ("image_id", "question_id"))
        numbers = {_row_id(row, ("image_id", "question_id")): number for number, row in answer_rows}
        images: dict[Any, Any] = {}
        seen: set[Any] = set()
        for key in by_id:  # ids are distinct as written; 42 and "42" are the same image too
            image = image_key(key)
            if image in seen:
                raise DataError(answers, f"image_id {image!r} appears twice", row=numbers[key])
            seen.add(image)
            images[key] = image
        ids = list(by_id)
    else:
        question_rows = read_rows(questions)
        questions_by_id = index_by_id(questions, question_rows, ("question_id",))
        by_id = index_by_id(answers, answer_rows, ("question_id", "image_id"))
        numbers = {_row_id(row, ("question_id", "image_id")): number for number, row in answer_rows}
        ids = align_answers(answers, by_id, questions, questions_by_id)
        images = {}
        question_numbers = {row["question_id"]: number for number, row in question_rows}
        for key in ids:
            row = questions_by_id[key]
            if "image_id" not in row and "image" not in row:
                raise DataError(questions, f"question_id {key!r} has no image_id or image",
                                row=question_numbers[key])
            images[key] = image_key(row.get("image_id", row.get("image")))
    texts = {key: answer_text(answers, numbers[key], by_id[key],
                              ("caption", "text", "answer", "response", "output")) for key in ids}

    truth = load_ground_truth(instance_paths, caption_paths, vocab, image_ids=set(images.values()))
    for key in ids:
        if images[key] not in truth:
            where = "" if images[key] == key else f" (answer id {key!r})"
            raise DataError(answers, f"image_id {images[key]!r}{where} is not in the annotations "
                            f"({', '.join(instance_paths + caption_paths)})", row=numbers[key])

    scores = score_captions([texts[key] for key in ids], [truth[images[key]] for key in ids], vocab)
    metrics = {name: float(scores[name]) for name in _HEADLINE}
    counts = {name: int(value) for name, value in scores.items() if name not in _HEADLINE
              and name != "chair_s_refine"}
    notes = ["CHAIR tokens from built-in rules, not NLTK: mentions can differ slightly from OPERA/HALVA "
             "(verbs such as 'skiing' are not lemmatized to objects)",
             "len is the mean tokens per caption (OPERA prints the same number); record the prompt and "
             "max_new_tokens, which move CHAIR a lot"]
    if not caption_paths:
        notes.append("ground truth from instances only; the reference also adds objects from the reference "
                     "captions (pass captions=)")
    if not instance_paths:
        notes.append("ground truth from reference captions only; the reference also adds instance categories "
                     "(pass instances=)")
    if opts["reference_exact"]:
        notes.append("reference_exact: ' motor bike', ' cheesecake' and 'iPhone' never match, and a singular 'bus' "
                     "is never counted (pattern.en's 'bus' -> 'bu'), as in CHAIR's original code")
    return EvalResult("chair", metrics, {}, counts, notes)


def _row_id(row: dict, fields: Sequence[str]) -> Any:
    return next(row[name] for name in fields if name in row)
