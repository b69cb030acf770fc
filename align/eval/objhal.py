"""Object HalBench in rule mode ("ObjHal-rule"): RLHF-V's response- and mention-level hallucination rates with
objects found by CHAIR's rules instead of GPT (docs/benchmarks.md, Object HalBench).

Published Object HalBench numbers have gpt-3.5-turbo list the objects of each response; the official scripts fall
back to CHAIR's `caption_to_words` without `--use_gpt`, and that is what runs here, so the figures are labelled
ObjHal-rule and are not comparable to the GPT-extracted ones (one paper's rule-style 15.8 against 25-28
elsewhere is the size of gap to expect). The extraction is align.eval.chair's, so CHAIR and ObjHal-rule find the
same objects, on RLAIF-V's rule-mode table (`objhal_vocab`).

Inputs:
- answers: JSONL/JSON rows with an id (`question_id`, `id` or `image_id`) and the response (`text`, `answer`,
  ...); "Assistant:" is removed, as the official script does. Without `questions`, each row's `image_id` (or its
  id) names the COCO image. With `questions` (e.g. the 300-question file), every question needs an answer and the
  question row's `image_id` names the image; answers without any id are matched to the questions by row order.
- ground truth, one or more of: instances=PATH and captions=PATH (COCO 2014 annotation JSONs, several joined
  with commas to merge train and val, as CHAIR does: the image's annotated categories plus the objects its
  reference captions mention) or ground_truth=PATH (JSONL rows {image_id, objects: [COCO names or synonyms]}).

Figures are percentages (avg_word_len is words). Options: instances, captions, ground_truth, unique_mentions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from align.eval.chair import ChairVocab

BENCHMARK = "ObjHal-rule"
ID_FIELDS: tuple[str, ...] = ("question_id", "id", "image_id")

DEFAULTS: dict[str, Any] = {
    "instances": None,  # COCO instances_*2014.json, comma-separated to merge several
    "captions": None,  # COCO captions_*2014.json, comma-separated to merge several
    "ground_truth": None,  # JSONL {image_id, objects: [...]}, comma-separated to merge several
    "unique_mentions": False,  # count each object once per response in Ment. (GPT mode's convention)
}

# RLAIF-V's synonyms_refine.txt adds these words to CHAIR's list (docs/benchmarks.md, CHAIR: Code lineage), each on the line of the category it
# names.
REFINE_ADDITIONS: dict[str, str] = {
    "brother": "person", "pedestrian": "person", "coffee table": "dining table", "remote control": "remote",
}

NOTES = (
    "ObjHal-rule: objects are extracted by rules (CHAIR's caption_to_words), not by GPT as in published Object "
    "HalBench numbers; these figures are not comparable to GPT-mode ones",
    "extraction is align.eval.chair's (built-in tokenizer and singularizer instead of NLTK's WordNet lemmatizer) "
    "with RLAIF-V's refined synonyms and two-word table",
)


# ---------------------------------------------------------------------------------------- object extraction


@lru_cache(maxsize=1)
def objhal_vocab() -> ChairVocab:
    """RLAIF-V's rule-mode tables on CHAIR's pipeline (align.eval.chair): CHAIR's synonym list without its stray
    spaces plus the refine additions, and CHAIR's two-word merges plus every two-word synonym as a phrase of its
    own ("dining table", "coffee table", "remote control" merge before "table" or "remote" can fire alone)."""
    from align.eval.chair import COCO_EXCLUSIONS, ChairVocab, coco_chair_vocab

    base = coco_chair_vocab(reference_exact=False)
    synonyms = {**base.synonyms, **REFINE_ADDITIONS}
    phrases = dict(base.phrases)
    for entry in synonyms:
        if len(entry.split()) == 2:
            phrases.setdefault(entry, entry)
    return ChairVocab(synonyms=synonyms, phrases=phrases, exclusions=COCO_EXCLUSIONS)


def extract_objects(text: str, vocab: ChairVocab | None = None) -> list[str]:
    """The COCO categories a response mentions, in order, repeats kept: CHAIR's `caption_to_words` as
    align.eval.chair implements it (tokenize, singularize, merge two-word phrases, drop "seat" beside "toilet",
    keep the synonyms), on `objhal_vocab()` unless told otherwise."""
    from align.eval.chair import caption_to_objects

    return caption_to_objects(text, vocab or objhal_vocab()).objects


# ------------------------------------------------------------------------------------------------ metrics


@dataclass(frozen=True)
class Response:
    """One scored response: the categories it mentions (repeats kept), its image's ground truth, its length."""

    mentions: tuple[str, ...]
    truth: frozenset[str]
    words: int = 0

    @property
    def hallucinated(self) -> tuple[str, ...]:
        return tuple(m for m in self.mentions if m not in self.truth)


def objhal_metrics(responses: Sequence[Response], unique_mentions: bool = False) -> dict[str, float]:
    """Object HalBench's figures (percent), as RLAIF-V's summarizer computes them, on CHAIR's counting:

    resp (CHAIRs_refine, "Response Hall") = responses with a hallucinated object / responses with an object;
    chair_s = the same over all responses; ment (CHAIRi) = hallucinated mentions / mentions, repeats counting
    (rule mode) or each category once per response (`unique_mentions`, GPT mode); obj_rec = distinct correct
    categories / ground-truth categories, summed over responses; correct_rate = 100 - resp;
    object_correct_rate = 100 - ment; avg_word_len = mean whitespace-separated words per response."""
    from align.eval.chair import chair_metrics

    mentions = [tuple(dict.fromkeys(r.mentions)) if unique_mentions else r.mentions for r in responses]
    scores = chair_metrics(mentions, [r.truth for r in responses])
    resp, ment = 100 * scores["chair_s_refine"], 100 * scores["chair_i"]
    return {
        "resp": resp,
        "ment": ment,
        "chair_s": 100 * scores["chair_s"],
        "obj_rec": 100 * scores["recall"],
        "correct_rate": 100 - resp,
        "object_correct_rate": 100 - ment,
        "avg_word_len": safe_div(sum(r.words for r in responses), len(responses)),
    }


# ------------------------------------------------------------------------------------------- ground truth


def _paths(option: str, value: Any) -> list[Path]:
    paths = [Path(part.strip()) for part in str(value).split(",") if part.strip()]
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"ObjHal-rule option {option}: no such file {path}")
    return paths


def load_truth_jsonl(path: Path, vocab: ChairVocab | None = None) -> dict[Any, set[str]]:
    """image id -> COCO categories from rows {image_id (or id), objects: [...]}; each object is a COCO category
    or synonym, singular or plural ("dogs" and "puppy" read as dog); a name that is neither is a DataError
    naming the image, since it could never match a mention and would make every correct one look hallucinated."""
    from align.data.nouns import singularize
    from align.eval.chair import image_key

    vocab = vocab or objhal_vocab()
    rows = read_rows(path)
    by_image = index_by_id(path, rows, ("image_id", "id", "question_id"))
    numbers = {id(row): number for number, row in rows}
    truth: dict[Any, set[str]] = {}
    for key, row in by_image.items():
        number = numbers[id(row)]
        objects = row.get("objects")
        if not isinstance(objects, list) or not all(isinstance(name, str) for name in objects):
            raise DataError(path, f"image {key!r}: objects must be a list of object names", row=number,
                            field="objects")
        categories = set()
        for name in objects:
            words = name.lower().split()
            singular = " ".join([*words[:-1], singularize(words[-1], vocab.known, vocab.irregular)] if words else [])
            category = vocab.synonyms.get(" ".join(words)) or vocab.synonyms.get(singular)
            if category is None:
                raise DataError(path, f"image {key!r}: {name!r} is not a COCO category or synonym", row=number,
                                field="objects")
            categories.add(category)
        image = image_key(key)
        if image in truth:
            raise DataError(path, f"image {image!r} appears twice", row=number)
        truth[image] = categories
    return truth


# ------------------------------------------------------------------------------------------------ evaluate


def evaluate(answers: str | Path, questions: str | Path | None = None, **options: Any) -> EvalResult:
    """Score responses with ObjHal-rule (see the module docstring for the inputs).

    Metrics: resp, ment, chair_s, obj_rec, correct_rate, object_correct_rate, avg_word_len. A response whose
    image has no ground truth, a missing or repeated id, or a question without an answer is a DataError naming
    the id; no ground-truth option, an unknown option or a path that does not exist is a ConfigError."""
    from align.eval.chair import load_ground_truth

    opts = coerce_options(options, DEFAULTS, BENCHMARK)
    if not (opts["instances"] or opts["captions"] or opts["ground_truth"]):
        raise ConfigError("ObjHal-rule needs ground truth: instances=PATH and/or captions=PATH (COCO 2014 "
                          "annotation JSONs, comma-separated to merge) or ground_truth=PATH (JSONL {image_id, "
                          "objects})")
    instances = _paths("instances", opts["instances"]) if opts["instances"] else []
    captions = _paths("captions", opts["captions"]) if opts["captions"] else []
    jsonl = _paths("ground_truth", opts["ground_truth"]) if opts["ground_truth"] else []
    scored = _answers(Path(answers), Path(questions) if questions is not None else None)

    vocab = objhal_vocab()
    truth: dict[Any, set[str]] = {}
    if instances or captions:
        truth = load_ground_truth(instances, captions, vocab, image_ids={image for _, image, _ in scored})
    for path in jsonl:
        for image, categories in load_truth_jsonl(path, vocab).items():
            truth.setdefault(image, set()).update(categories)
    sources = ", ".join(str(path) for path in [*instances, *captions, *jsonl])

    responses, images = [], set()
    for text, image, (path, number) in scored:
        if image not in truth:
            raise DataError(path, f"image {image!r} has no ground truth in {sources}", row=number)
        images.add(image)
        text = text.replace("Assistant:", "").strip()
        responses.append(Response(tuple(extract_objects(text, vocab)), frozenset(truth[image]), len(text.split())))

    metrics = objhal_metrics(responses, bool(opts["unique_mentions"]))
    counts = {
        "responses": len(responses),
        "images": len(images),
        "responses_with_objects": sum(bool(r.mentions) for r in responses),
        "hallucinated_responses": sum(bool(r.hallucinated) for r in responses),
        "mentions": sum(len(r.mentions) for r in responses),
        "hallucinated_mentions": sum(len(r.hallucinated) for r in responses),
    }
    notes = [*NOTES, "ment counts each category once per response (GPT mode's convention)"
             if opts["unique_mentions"] else "ment counts repeated mentions (rule mode's convention; "
             "unique_mentions=true counts each category once per response)"]
    if instances and not captions:
        notes.append("ground truth from instances only; the reference also adds the objects of the reference "
                     "captions (pass captions=)")
    return EvalResult(BENCHMARK, metrics, {}, counts, notes)


def _answers(answers: Path, questions: Path | None) -> list[tuple[str, Any, tuple[Path, int]]]:
    """(response text, image id, (file, row) to blame) for every response to score."""
    rows = read_rows(answers)
    if questions is None:
        by_id = index_by_id(answers, rows, ID_FIELDS)
        numbers = {id(row): number for number, row in rows}
        return [(answer_text(answers, numbers[id(row)], row), _image_of(key, row), (answers, numbers[id(row)]))
                for key, row in by_id.items()]
    question_rows = read_rows(questions)
    by_question = index_by_id(questions, question_rows, ID_FIELDS)
    question_numbers = {id(row): number for number, row in question_rows}
    if rows and not any(name in row for _, row in rows for name in ID_FIELDS):
        # The official answer files may carry no id at all: the n-th answer is to the n-th question.
        if len(rows) != len(by_question):
            raise DataError(answers, f"{len(rows)} answers without ids for {len(by_question)} questions of "
                            f"{questions}; answers without ids must follow the questions' order one to one")
        return [(answer_text(answers, number, row), _image_of(key, question),
                 (questions, question_numbers[id(question)]))
                for (number, row), (key, question) in zip(rows, by_question.items(), strict=True)]
    by_answer = index_by_id(answers, rows, ID_FIELDS)
    numbers = {id(row): number for number, row in rows}
    return [(answer_text(answers, numbers[id(by_answer[key])], by_answer[key]), _image_of(key, by_question[key]),
             (questions, question_numbers[id(by_question[key])]))
            for key in align_answers(answers, by_answer, questions, by_question)]


def _image_of(key: Any, row: dict) -> Any:
    """The COCO image a row is about: its image_id, else an `image` that is a COCO file name (never embedded image
    data, which the 300-question file carries), else its id; 139, "139" and "COCO_val2014_000000000139.jpg" are
    all 139."""
    from align.eval.chair import image_key

    if "image_id" in row:
        return image_key(row["image_id"])
    image = row.get("image")
    if isinstance(image, str) and len(image) < 512 and isinstance(image_key(image), int):
        return image_key(image)
    return image_key(key)
