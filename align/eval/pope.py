"""POPE (Li et al., EMNLP 2023): yes/no object-existence questions, the reference answer parser, and its metrics.

Everything here follows POPE's reference code (docs/benchmarks.md, POPE):

* `build_questions` builds the random / popular / adversarial splits with POPE's rules (1.1): the positives are
  the first `num_per_image` objects of each image in annotation order, each followed by one negative that is
  neither in the image nor already asked about for that image; questions alternate yes, no, yes, no, ...
* `parse_reference` is POPE's `evaluate.py` / LLaVA's `eval_pope.py` parser, byte for byte (1.3). It defaults to
  "yes", so an empty answer or a refusal counts as yes: that is the reference behaviour the published numbers
  use, so the headline figures use it. `parse_strict` is a stricter reading that reports what it cannot read.
* `pope_metrics` is `evaluate.py`'s arithmetic (1.4), positive class "yes", with the divisions guarded so an
  always-"no" model scores 0 instead of crashing.
* `evaluate` scores a LLaVA-style answer file against a POPE question file, per category and overall.

Deliberate differences from the reference code (each noted where it happens): a proper a/an rule in the template
(the reference's `replace("a", "an")` also wrote "imange"), a random negative drawn uniformly from the valid
candidates instead of redrawing until valid (same distribution, and it cannot loop forever), labels other than
yes/no rejected instead of read as yes.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from align.data.nouns import article
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
from align.files import read_json

STRATEGIES: tuple[str, ...] = ("random", "popular", "adversarial")
# POPE's template with the article made a placeholder; {object} is the raw object name ("a skis", as released).
TEMPLATE = "Is there {article} {object} in the image?"
# LLaVA appends this to every POPE question (docs/benchmarks.md, POPE: Files); builders of LLaVA-style files add it themselves.
LLAVA_SUFFIX = "\nAnswer the question using a single word or phrase."

# ------------------------------------------------------------------------------------- questions


def load_coco_objects(instances_json_path: str | Path, key: str = "id") -> dict[Any, list[str]]:
    """{image: [category names]} from a COCO instances file, names in annotation order without repeats.

    This is POPE's builder input (one object list per image). Images listed in `images` but without any
    annotation get an empty list, so callers can tell "no objects" from "unknown image". `key="file_name"` keys
    the result by file name ("COCO_val2014_000000310196.jpg"), which is what POPE's `image` field holds.
    An annotation without an image or category id, or naming one the file does not define, is a DataError naming
    it: a silently dropped annotation would make an object look absent and turn it into a wrong negative.
    """
    path = Path(instances_json_path)
    data = load_json_object(path)
    if key not in ("id", "file_name"):
        raise ConfigError(f"load_coco_objects: key must be 'id' or 'file_name', got {key!r}")
    categories: dict[Any, str] = {}
    for number, category in enumerate(data.get("categories", []), start=1):
        if not isinstance(category, dict) or "id" not in category or "name" not in category:
            raise DataError(path, "a category needs an id and a name", row=number, field="categories")
        categories[category["id"]] = category["name"]
    names: dict[Any, Any] = {}
    objects: dict[Any, list[str]] = {}
    for number, image in enumerate(data.get("images", []), start=1):
        if not isinstance(image, dict) or "id" not in image:
            raise DataError(path, "an image needs an id", row=number, field="images")
        if key == "file_name" and "file_name" not in image:
            raise DataError(path, f"image id {image['id']!r} has no file_name", row=number, field="images")
        names[image["id"]] = image["id"] if key == "id" else image["file_name"]
        objects.setdefault(names[image["id"]], [])
    for number, annotation in enumerate(data.get("annotations", []), start=1):
        which = f"annotation {annotation.get('id', number)!r}" if isinstance(annotation, dict) else "annotation"
        if not isinstance(annotation, dict):
            raise DataError(path, f"{which} is not an object", row=number, field="annotations")
        for name in ("image_id", "category_id"):
            if name not in annotation:
                raise DataError(path, f"{which} has no {name}", row=number, field="annotations")
        category_id, image_id = annotation["category_id"], annotation["image_id"]
        if category_id not in categories:
            raise DataError(path, f"{which} names category_id {category_id!r}, which is not in categories",
                            row=number, field="annotations")
        if image_id not in names:
            if key == "file_name" or names:
                # Without an `images` list, ids are all there is; with one, an unlisted id is a broken file.
                raise DataError(path, f"{which} names image_id {image_id!r}, which is not in images", row=number,
                                field="annotations")
            names[image_id] = image_id
        found = objects.setdefault(names[image_id], [])
        if categories[category_id] not in found:
            found.append(categories[category_id])
    return objects


def build_questions(objects_by_image: Mapping[Hashable, Sequence[str]], strategy: str, num_per_image: int = 3,
                    seed: int = 0, num_images: int | None = None, template: str = TEMPLATE,
                    min_objects: int | None = None, shuffle_positives: bool = False,
                    classes: Sequence[str] | None = None, frequencies: Mapping[str, float] | None = None,
                    cooccurrence: Mapping[str, Mapping[str, float]] | None = None,
                    start_id: int = 1) -> list[dict[str, Any]]:
    """POPE questions for one negative strategy, rows `{question_id, image, text, label, category, target}`.

    POPE's rules (docs/benchmarks.md, POPE: Building the questions), with the reference defaults:
    1. keep images with at least `min_objects` (default `num_per_image`) distinct objects; if `num_images` is set,
       draw that many with `random.sample` (all of them, in input order, when it is None or larger);
    2. count each object's images (popularity) and, per object, how often every other object shares an image
       (co-occurrence), over the chosen images;
    3. per image, the positives are its first `num_per_image` objects in annotation order (POPE does not draw
       them; `shuffle_positives=True` draws them instead, as the shapes design asks), and after each positive
       comes one negative that is not in the image and not already asked about for this image:
       random = uniform over those candidates, popular = the most frequent one, adversarial = the one that
       co-occurs most with this positive (random when none co-occurs).
    Ties keep first-seen order (POPE's stable sort). `classes` is the pool of negatives (default: the objects
    seen in the chosen images, as in POPE); `frequencies` / `cooccurrence` replace the measured tables (a
    synthetic world passes its generator's prior). `image` is the key of `objects_by_image` (key COCO objects by
    file name to get POPE's field). Deterministic for a given seed.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"POPE strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if num_per_image < 1:
        raise ConfigError(f"num_per_image must be at least 1, got {num_per_image}")
    rng = random.Random(seed)
    needed = num_per_image if min_objects is None else min_objects
    distinct = {image: list(dict.fromkeys(objects)) for image, objects in objects_by_image.items()}
    eligible = [image for image, objects in distinct.items() if len(objects) >= max(needed, 1)]
    if num_images is not None and num_images < len(eligible):
        eligible = rng.sample(eligible, num_images)

    seen: Counter[str] = Counter()
    together: dict[str, Counter[str]] = {}
    for image in eligible:
        objects = distinct[image]
        seen.update(objects)
        for obj in objects:
            row = together.setdefault(obj, Counter())
            row.update(other for other in objects if other != obj)
    pool = list(dict.fromkeys(classes)) if classes is not None else list(seen)
    popularity = dict(frequencies) if frequencies is not None else dict(seen)
    by_popularity = sorted(pool, key=lambda obj: -popularity.get(obj, 0))
    if cooccurrence is not None:
        together = {obj: Counter(dict(row)) for obj, row in cooccurrence.items()}

    rows: list[dict[str, Any]] = []
    question_id = start_id
    for image in eligible:
        objects = distinct[image]
        positives = rng.sample(objects, len(objects)) if shuffle_positives else list(objects)
        asked: set[str] = set()
        for positive in positives[:num_per_image]:
            asked.add(positive)
            negative = _negative(strategy, positive, set(objects) | asked, pool, by_popularity, together, rng)
            if negative is None:
                raise DataError("objects_by_image", f"image {image!r}: every candidate object is in the image or "
                                "already asked about, so no negative is left for the "
                                f"{strategy} split")
            asked.add(negative)
            for target, label in ((positive, "yes"), (negative, "no")):
                rows.append({"question_id": question_id, "image": image, "text": make_question(target, template),
                             "label": label, "category": strategy, "target": target})
                question_id += 1
    return rows


def make_question(obj: str, template: str = TEMPLATE) -> str:
    """The template filled with the raw object name and a proper article ("an umbrella", "a skis")."""
    return template.format(article=article(obj), object=obj)


def _negative(strategy: str, positive: str, taken: set[str], pool: Sequence[str], by_popularity: Sequence[str],
              together: Mapping[str, Counter[str]], rng: random.Random) -> str | None:
    """One negative for `positive` that is not in `taken`, or None when no candidate is left."""
    if strategy == "popular":
        return next((obj for obj in by_popularity if obj not in taken), None)
    if strategy == "adversarial":
        ranked = sorted(together.get(positive, Counter()).items(), key=lambda item: -item[1])
        found = next((obj for obj, count in ranked if count > 0 and obj not in taken), None)
        if found is not None:
            return found
    candidates = [obj for obj in pool if obj not in taken]
    return rng.choice(candidates) if candidates else None


# --------------------------------------------------------------------------------------- parsing


def parse_reference(text: str) -> str:
    """POPE's and LLaVA's parser, reproduced exactly (docs/benchmarks.md, POPE: Parsing): "yes" unless the first sentence has a "no".

    Only the text before the first "." is read, commas are removed, and it is split on single spaces
    (case-sensitive): the tokens "No", "no" or "not" give "no", anything else "yes". So "There is no dog" is no,
    "Yes, although it is not clear" is no, and "", "NO", "Nope", "No\\nThere is" and refusals are all yes.
    """
    if "." in text:
        text = text.split(".")[0]
    text = text.replace(",", "")
    words = text.split(" ")
    if "No" in words or "not" in words or "no" in words:
        return "no"
    return "yes"


_LEADING_WORD = re.compile(r"[\W_]*([a-z]+)")


def parse_strict(text: str) -> str:
    """"yes", "no" or "unknown": the answer's first word, read case-insensitively after leading punctuation.

    Rules: lower-case; skip leading whitespace and punctuation (quotes, "*", "-", brackets; not digits); the first
    run of letters must be exactly "yes" or "no". So "Yes, but not clear." and "**YES**" are yes, "No." is no,
    and "There is no dog", "not sure", "Nope", "Yesterday", "1. yes" and "" are unknown. It never guesses, so its
    unknown rate says how often the reference parser's default "yes" decided the answer.
    """
    match = _LEADING_WORD.match(text.lower())
    if match and match.group(1) in ("yes", "no"):
        return match.group(1)
    return "unknown"


PARSERS = {"reference": parse_reference, "strict": parse_strict}

# --------------------------------------------------------------------------------------- metrics


def pope_metrics(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """POPE's evaluate.py figures, positive class "yes": accuracy, precision, recall, f1, yes_ratio (fractions)
    and the tp/fp/tn/fn counts.

    precision = tp/(tp+fp), recall = tp/(tp+fn), f1 = 2pr/(p+r), accuracy = (tp+tn)/n, yes_ratio = yes/n, each
    0.0 when its denominator is 0 (the reference divides by zero for an always-"no" answerer). Predictions may
    also be "unknown" (the strict parser): such an answer is never correct, counts as a miss (fn) when the label
    is yes and as neither tn nor fp when it is no, and is counted in `unknown`. With yes/no predictions only this
    is exactly the reference.
    """
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} labels")
    bad_labels = sorted({label for label in labels if label not in ("yes", "no")})
    bad_predictions = sorted({pred for pred in predictions if pred not in ("yes", "no", "unknown")})
    if bad_labels or bad_predictions:
        raise ValueError(f"labels must be yes/no and predictions yes/no/unknown; got labels {bad_labels}, "
                         f"predictions {bad_predictions}")
    pairs = Counter(zip(predictions, labels, strict=True))
    tp, fp = pairs["yes", "yes"], pairs["yes", "no"]
    tn, fn = pairs["no", "no"], pairs["no", "yes"] + pairs["unknown", "yes"]
    unknown = pairs["unknown", "yes"] + pairs["unknown", "no"]
    n = len(labels)
    precision, recall = safe_div(tp, tp + fp), safe_div(tp, tp + fn)
    return {
        "accuracy": safe_div(tp + tn, n),
        "precision": precision,
        "recall": recall,
        "f1": safe_div(2 * precision * recall, precision + recall),
        "yes_ratio": safe_div(tp + fp, n),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn, "unknown": unknown, "n": n,
    }


# -------------------------------------------------------------------------------------- evaluate

DEFAULTS: dict[str, Any] = {
    "parser": "reference",  # which parser gives the headline numbers: reference | strict
    "match": "id",          # join answers to questions by question_id, or by position (POPE's original files)
}
_RATIOS = ("accuracy", "precision", "recall", "f1", "yes_ratio")


def evaluate(answers: str | Path, questions: str | Path | None = None, **options: Any) -> EvalResult:
    """POPE scores of an answer file (JSONL `{question_id, text}`) against a POPE question file
    (`{question_id, image, text, label, [category]}`).

    `groups` holds each category's figures (the `category` field, else the split named in the file name, else
    "all"); `metrics` the pooled figures plus `mean_f1`, the mean F1 over categories (LLaVA's "POPE" column).
    The headline parser is `parser` (default: the reference); the strict parser's `unknown_rate` is always
    reported. `match=position` pairs the n-th answer with the n-th question, as POPE's own answer files need.
    """
    opts = coerce_options(options, DEFAULTS, "pope")
    if opts["parser"] not in PARSERS:
        raise ConfigError(f"pope option parser must be one of {', '.join(PARSERS)}, got {opts['parser']!r}")
    if opts["match"] not in ("id", "position"):
        raise ConfigError(f"pope option match must be 'id' or 'position', got {opts['match']!r}")
    if questions is None:
        raise ConfigError("pope needs the question file with labels (questions=coco_pope_*.json or "
                          "llava_pope_test.jsonl)")
    question_rows = read_rows(questions)
    by_id = index_by_id(questions, question_rows, ("question_id",))
    numbers = {row["question_id"]: number for number, row in question_rows}
    answer_rows = read_rows(answers)
    if opts["match"] == "position":
        if len(answer_rows) != len(question_rows):
            raise DataError(answers, f"{len(answer_rows)} answers for {len(question_rows)} questions of "
                            f"{questions}; match=position needs one answer per question, in order")
        texts = {qid: answer_text(answers, number, row)
                 for qid, (number, row) in zip(by_id, answer_rows, strict=True)}
        ids = list(by_id)
    else:
        answer_by_id = index_by_id(answers, answer_rows, ("question_id",))
        answer_numbers = {row["question_id"]: number for number, row in answer_rows}
        ids = align_answers(answers, answer_by_id, questions, by_id)
        texts = {qid: answer_text(answers, answer_numbers[qid], answer_by_id[qid]) for qid in ids}

    default_category = _category_from_name(Path(questions).stem)
    labels: dict[Any, str] = {}
    categories: dict[Any, str] = {}
    for qid in ids:
        row = by_id[qid]
        label = row.get("label")
        normal = label.strip().lower() if isinstance(label, str) else None
        if normal not in ("yes", "no"):
            raise DataError(questions, f"question_id {qid!r}: label must be yes or no, got {label!r}",
                            row=numbers[qid], field="label")
        labels[qid] = normal
        categories[qid] = str(row.get("category") or default_category)

    parse = PARSERS[opts["parser"]]
    headline = {qid: parse(texts[qid]) for qid in ids}
    strict = {qid: parse_strict(texts[qid]) for qid in ids}

    def score(subset: list[Any]) -> dict[str, float]:
        figures = pope_metrics([headline[q] for q in subset], [labels[q] for q in subset])
        out = {name: figures[name] for name in _RATIOS}
        out["unknown_rate"] = safe_div(sum(strict[q] == "unknown" for q in subset), len(subset))
        return out

    names = list(dict.fromkeys(categories[qid] for qid in ids))
    groups = {name: score([qid for qid in ids if categories[qid] == name]) for name in names}
    metrics = score(ids)
    metrics["mean_f1"] = safe_div(sum(group["f1"] for group in groups.values()), len(groups))
    overall = pope_metrics([headline[q] for q in ids], [labels[q] for q in ids])
    counts = {"questions": len(ids), "yes_labels": sum(v == "yes" for v in labels.values()),
              "no_labels": sum(v == "no" for v in labels.values()),
              "unknown_answers": sum(v == "unknown" for v in strict.values()),
              **{name: int(overall[name]) for name in ("tp", "fp", "tn", "fn")}}
    per_category = ", ".join(f"{name} {sum(categories[q] == name for q in ids)}" for name in names)
    notes = [f"parser: {opts['parser']} (headline); unknown_rate from the strict parser",
             f"{len(ids)} questions ({per_category}); LLaVA's pinned POPE files total 8,910 (random 2,910), "
             "later revisions 9,000: scores on the two are not strictly comparable"]
    return EvalResult("pope", metrics, groups, counts, notes)


def _category_from_name(stem: str) -> str:
    """The split a question file's name says it holds ("coco_pope_random" -> "random"), else "all"."""
    return next((name for name in STRATEGIES if name in stem.lower()), "all")


def load_json_object(path: Path) -> dict:
    """A COCO annotation file as a dict; a missing, invalid or non-object file is a DataError naming it."""
    if not path.is_file():
        raise DataError(path, "no such file")
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(path, "a COCO annotation file is a JSON object with images, annotations, categories")
    return data
