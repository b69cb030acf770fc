"""ShapesCHAIR (docs/benchmarks.md): CHAIR on shapes-world captions, plus the attribute checks only exact ground truth allows.

Mentions come from align.eval.chair's `caption_to_objects` with the shapes vocabulary (9.1's synonyms, the
`plus sign`/`half moon`/`round shape` merges, the generic safe words, hyphens split so "star-shaped" names a
star), and CHAIR_i, CHAIR_s, Recall, Len and CHAIRs_refine from its `chair_metrics`, so the formulas are CHAIR's
own (9.6). The ground truth is each image's exact object list in the world's sources.jsonl; nothing is taken
from captions. What this module adds, all micro averages over claims pooled across captions:

- chair_i_unique: CHAIR_i with each class counted once per caption (Object HalBench's "Ment." convention);
- color_chair: of the mentions with a colour word in the 2 tokens before the noun (same sentence), the share
  whose (colour, class) pair no object of the image has; a hallucinated class counts as a wrong pair;
- count_error: of the count claims (a number other than one, as a word or digits, just before a shape noun with
  at most 2 colour/size words between: "two squares", "3 large red stars"), the share whose number is not the
  count of the image's objects of that class with the stated colour/size;
- position_error: of the grid phrases ("in the top left", "on the right", "in the center", bare corner phrases)
  in a sentence that names exactly one class, the share where no object of that class sits in that cell;
- cover = recall, hal = chair_s (AMBER's names); cog = bait classes mentioned / bait classes (the absent
  partners the planted co-occurrence makes likely, from world.json's `bait`).
Sentences end at ".", "!", "?", ";" and line breaks, so list-style answers ("- red circle, top left") give one
sentence per line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from align.errors import ConfigError, DataError
from align.eval.chair import ChairVocab, Extraction, caption_to_objects, chair_metrics
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

BENCHMARK = "shapes-chair"
CHAIR_OPTIONS: dict[str, Any] = {
    "sources": "",  # the world's sources.jsonl (default: questions when it is one, else sources.jsonl beside it)
    "world": "",  # the world's world.json for the bait classes (default: beside sources.jsonl)
    "allow_extra": False,  # with a prompts file: accept answers to ids it does not hold
}
ANSWER_IDS = ("question_id", "image_id", "id", "image")
PROMPT_IDS = ("question_id", "id", "image_id")
TEXT_FIELDS = ("caption", "text", "answer", "response", "output")
SENTENCE_ENDS = frozenset({".", "!", "?", ";"})
ADJECTIVE_WINDOW = 2  # colour words count in the 2 tokens before a shape noun (docs/benchmarks.md, World and vocabulary)


@lru_cache(maxsize=1)
def shapes_chair_vocab() -> ChairVocab:
    """CHAIR's extraction tables for the shapes world, built from the shared shapes vocabulary (no copy)."""
    from align.data.vocab.shapes import shapes_vocabulary

    return ChairVocab.from_vocabulary(shapes_vocabulary(), split_hyphens=True)


@lru_cache(maxsize=1)
def _attribute_words() -> tuple[dict[str, str], dict[str, str], dict[str, int], dict[tuple[str, ...], str]]:
    """(colour word -> colour, size word -> size, number word -> n, position phrase tokens -> cell)."""
    from align.data.vocab.shapes import shapes_vocabulary

    vocab = shapes_vocabulary()
    colors = {c: c for c in vocab.colors} | dict(vocab.color_synonyms)
    sizes = {s: s for s in vocab.sizes} | dict(vocab.size_synonyms)
    # Hyphens are split before matching, so "top-left" is matched as "top left".
    positions = {tuple(phrase.replace("-", " ").split()): cell for phrase, cell in vocab.positions.items()}
    return colors, sizes, dict(vocab.numbers), positions


# ------------------------------------------------------------------------------------------- claims


@dataclass
class Claims:
    """What one caption states, each claim paired with whether the ground truth bears it out."""

    color: list[bool]
    count: list[bool]
    position: list[bool]


def _sentences(caption: str, vocab: ChairVocab) -> list[Extraction]:
    """The caption's sentences (lines, then end punctuation), each a CHAIR extraction of its own."""
    out = []
    for line in caption.splitlines():
        extraction = caption_to_objects(line, vocab)
        start = 0
        for end in [*(i for i, w in enumerate(extraction.words) if w in SENTENCE_ENDS), len(extraction.words)]:
            words = extraction.words[start:end]
            mentions = [m._replace(position=m.position - start) for m in extraction.mentions
                        if start <= m.position < end]
            if words:
                out.append(Extraction(words, mentions))
            start = end + 1
    return out


def _number(word: str, numbers: dict[str, int]) -> int | None:
    if word.isdigit():
        return int(word)
    return numbers.get(word)


def caption_claims(caption: str, objects: Sequence[dict[str, Any]], vocab: ChairVocab | None = None) -> Claims:
    """The colour, count and position claims of one caption checked against the image's `objects` (see the module
    docstring for what each claim is)."""
    vocab = vocab or shapes_chair_vocab()
    colors, sizes, numbers, positions = _attribute_words()
    longest = max(len(p) for p in positions)
    claims = Claims([], [], [])
    for sentence in _sentences(caption, vocab):
        words = sentence.words
        for mention in sentence.mentions:
            before = words[max(0, mention.position - ADJECTIVE_WINDOW):mention.position]
            color = next((colors[w] for w in reversed(before) if w in colors), None)
            if color is not None:
                claims.color.append(any(o["name"] == mention.object and o["color"] == color for o in objects))
            # Count: walk back over at most 2 colour/size words to a number.
            stated: dict[str, str] = {}
            i = mention.position - 1
            while i >= 0 and mention.position - i <= ADJECTIVE_WINDOW and (words[i] in colors or words[i] in sizes):
                stated.setdefault("color" if words[i] in colors else "size", colors.get(words[i]) or sizes[words[i]])
                i -= 1
            n = _number(words[i], numbers) if i >= 0 else None
            if n is not None and n != 1:
                true = sum(o["name"] == mention.object and all(o[k] == v for k, v in stated.items()) for o in objects)
                claims.count.append(n == true)
        classes = {m.object for m in sentence.mentions}
        if len(classes) != 1:
            continue
        (cls,) = classes
        i = 0
        while i < len(words):
            for size in range(min(longest, len(words) - i), 0, -1):
                cell = positions.get(tuple(words[i:i + size]))
                if cell is not None:
                    claims.position.append(any(o["name"] == cls and o["cell"] == cell for o in objects))
                    i += size
                    break
            else:
                i += 1
    return claims


def caption_claim_score(caption: str, objects: Sequence[dict[str, Any]]) -> int:
    """Correct mentions minus wrong claims: the classes the caption names that the image holds (each once), minus
    the classes it names that the image does not hold, minus its colour, count and position claims that the
    objects contradict."""
    vocab = shapes_chair_vocab()
    named = {m.object for m in caption_to_objects(caption, vocab).mentions}
    present = {o["name"] for o in objects}
    claims = caption_claims(caption, objects, vocab)
    wrong = sum(not ok for ok in (*claims.color, *claims.count, *claims.position))
    return len(named & present) - len(named - present) - wrong


def claim_reward(prompts: list, completions: list, objects: Sequence | None = None, **_: Any) -> list[float]:
    """`caption_claim_score` of each completion against its row's `objects` (the shapes world's rl_caption.jsonl
    rows carry them): a reward for `align grpo` / `align ppo` that pays for every true mention and charges for
    every hallucinated object or attribute."""
    from align.data.shapes_rewards import answer_text

    if objects is None:
        raise ValueError("needs the prompt rows' 'objects' column (the shapes world's rl_caption.jsonl)")
    if len(objects) != len(completions):
        raise ValueError(f"got {len(objects)} 'objects' values for {len(completions)} completions")
    return [float(caption_claim_score(answer_text(c), o)) for c, o in zip(completions, objects, strict=True)]


claim_reward.reads = ("objects",)  # the column the RL trainers check on every prompt row before training


# ------------------------------------------------------------------------------------------- inputs


def _load_sources(path: Path) -> tuple[dict[str, dict], dict[str, str]]:
    """({source id: row}, {every way an answer may name the image: source id}); objects are checked."""
    from align.data.shapes_vocab import CLASSES

    rows = read_rows(path)
    by_id = index_by_id(path, rows, ("id",))
    numbers = {id(row): n for n, row in rows}
    aliases: dict[str, str] = {}
    for key, row in by_id.items():
        objects = row.get("objects")
        if not isinstance(objects, list) or not all(isinstance(o, dict) for o in objects):
            raise DataError(path, f"source {key!r} has no objects list", row=numbers[id(row)], field="objects")
        for obj in objects:
            if obj.get("name") not in CLASSES:
                raise DataError(path, f"source {key!r}: object name {obj.get('name')!r} is not a shapes class",
                                row=numbers[id(row)], field="objects")
        names = [str(key)]
        for image in row.get("images") or []:
            if isinstance(image, str):
                names += [image, Path(image).name, Path(image).stem]
        for name in names:
            aliases.setdefault(name, str(key))
    return by_id, aliases


def _load_bait(path: Path | None, sources: dict[str, dict]) -> tuple[dict[str, list[str]], str | None]:
    """Bait classes per source id: world.json's when there is one, else recomputed from the objects by the
    generator's own rule (and a note saying so)."""
    from align.data.shapes import bait_classes

    bait: dict[str, list[str]] = {}
    note = None
    if path is not None and path.is_file():
        bait = read_json(path).get("bait", {})
    else:
        note = "no world.json found: bait classes recomputed from the objects with the generator's planted pairs"
    return {key: list(bait.get(key, bait_classes({o["name"] for o in row["objects"]})))
            for key, row in sources.items()}, note


def _resolve(aliases: dict[str, str], value: Any) -> str | None:
    return aliases.get(str(value)) if isinstance(value, (str, int)) else None


def _captions(answers: Path, prompts: Path | None, aliases: dict[str, str], sources_path: Path,
              allow_extra: bool) -> list[tuple[Any, str, str]]:
    """(answer id, source id, caption) per answer; an unknown or repeated image is a DataError naming it."""
    a_rows = read_rows(answers)
    numbers = {id(row): n for n, row in a_rows}
    out: list[tuple[Any, str, str]] = []
    if prompts is None:  # answers name their images themselves
        by_id = index_by_id(answers, a_rows, ANSWER_IDS)
        seen: dict[str, Any] = {}
        for key, row in by_id.items():
            source = _resolve(aliases, key)
            if source is None:
                raise DataError(answers, f"image {key!r} is not in {sources_path}", row=numbers[id(row)])
            if source in seen:
                raise DataError(answers, f"image {source!r} is answered twice (ids {seen[source]!r} and {key!r})",
                                row=numbers[id(row)])
            seen[source] = key
            out.append((key, source, answer_text(answers, numbers[id(row)], row, TEXT_FIELDS)))
        return out
    q_rows = read_rows(prompts)
    questions = index_by_id(prompts, q_rows, PROMPT_IDS)
    q_numbers = {id(row): n for n, row in q_rows}
    by_id = index_by_id(answers, a_rows, PROMPT_IDS)
    for key in align_answers(answers, by_id, prompts, questions, allow_extra=allow_extra):
        question = questions[key]
        image = question.get("image", question.get("image_id", key))
        source = _resolve(aliases, image)
        if source is None:
            raise DataError(prompts, f"question {key!r}: image {image!r} is not in {sources_path}",
                            row=q_numbers[id(question)], field="image")
        row = by_id[key]
        out.append((key, source, answer_text(answers, numbers[id(row)], row, TEXT_FIELDS)))
    return out


def _is_sources(path: Path) -> bool:
    """Whether a file is a world's sources (rows with `objects`) rather than a prompts file."""
    rows = read_rows(path)
    return bool(rows) and all("objects" in row for _, row in rows)


# ------------------------------------------------------------------------------------------ evaluate


def evaluate_chair(answers: str | Path, questions: str | Path | None = None, **options: Any) -> EvalResult:
    """ShapesCHAIR of captions against a shapes world (metrics: module docstring).

    `answers`: rows with the caption (`text`, `caption`, ...) and an id. `questions` is either the world's
    sources.jsonl (each answer names its image by `question_id`/`image_id`/`id`/`image`: the source id, the image
    path or file name) or a prompts file such as chair_questions.jsonl ({question_id, image}; every prompt needs an
    answer), with sources=PATH or a sources.jsonl beside it. Options: sources, world, allow_extra.
    """
    opts = coerce_options(options, CHAIR_OPTIONS, BENCHMARK)
    answers = Path(answers)
    prompts = Path(questions) if questions is not None else None
    if opts["sources"]:
        sources_path = Path(opts["sources"])
    elif prompts is not None:
        sources_path = prompts if _is_sources(prompts) else prompts.parent / "sources.jsonl"
    else:
        raise ConfigError(f"{BENCHMARK} needs the world's ground truth: questions=WORLD/sources.jsonl (or a prompts "
                          "file beside it) or sources=WORLD/sources.jsonl")
    if prompts is not None and prompts.resolve() == sources_path.resolve():
        prompts = None
    sources, aliases = _load_sources(sources_path)
    world_path = Path(opts["world"]) if opts["world"] else sources_path.parent / "world.json"
    if opts["world"] and not world_path.is_file():
        raise DataError(world_path, "no such file")
    bait, bait_note = _load_bait(world_path, sources)
    items = _captions(answers, prompts, aliases, sources_path, bool(opts["allow_extra"]))

    vocab = shapes_chair_vocab()
    extractions = [caption_to_objects(text, vocab) for _, _, text in items]
    truths = [{o["name"] for o in sources[source]["objects"]} for _, source, _ in items]
    found = [e.objects for e in extractions]
    core = chair_metrics(found, truths, [len(e.words) for e in extractions])
    unique = chair_metrics([list(dict.fromkeys(f)) for f in found], truths)
    claims = [caption_claims(text, sources[source]["objects"], vocab) for _, source, text in items]
    baits = [bait[source] for _, source, _ in items]
    bait_hits = sum(len(set(b) & set(f)) for b, f in zip(baits, found, strict=True))
    bait_total = sum(len(b) for b in baits)

    def pooled(kind: str) -> tuple[int, int]:
        checks = [ok for c in claims for ok in getattr(c, kind)]
        return len(checks), checks.count(False)

    (n_color, bad_color), (n_count, bad_count), (n_pos, bad_pos) = (pooled(k) for k in ("color", "count",
                                                                                           "position"))
    metrics = {
        "chair_i": float(core["chair_i"]), "chair_s": float(core["chair_s"]), "recall": float(core["recall"]),
        "len": float(core["len"]), "chair_s_refine": float(core["chair_s_refine"]),
        "chair_i_unique": float(unique["chair_i"]),
        "color_chair": safe_div(bad_color, n_color), "count_error": safe_div(bad_count, n_count),
        "position_error": safe_div(bad_pos, n_pos),
        "cover": float(core["recall"]), "hal": float(core["chair_s"]), "cog": safe_div(bait_hits, bait_total),
    }
    counts = {"captions": len(items), "mentions": int(core["mentions"]),
              "hallucinated_mentions": int(core["hallucinated_mentions"]),
              "unique_mentions": int(unique["mentions"]), "color_claims": n_color, "color_errors": bad_color,
              "count_claims": n_count, "count_errors": bad_count, "position_claims": n_pos,
              "position_errors": bad_pos, "bait_classes": bait_total, "bait_mentioned": bait_hits}
    notes = ["CHAIR pipeline of align.eval.chair with the shapes vocabulary; ground truth exact (sources.jsonl), "
             "no caption-derived objects",
             "cover = recall, hal = chair_s (AMBER names); cog = bait classes mentioned / bait classes; "
             "chair_i_unique counts each class once per caption (Object HalBench Ment.)"]
    if bait_note:
        notes.append(bait_note)
    return EvalResult(BENCHMARK, metrics, {}, counts, notes)
