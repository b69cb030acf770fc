"""The shapes world: a zero-download dataset of coloured shapes with exact ground truth.

One call writes a folder the whole toolkit trains and evaluates on:

    images/shapes_000000.png ...   RGB, white background, 1..6 non-overlapping shapes
    sources.jsonl                  builder sources: id, images, split, caption, objects, seed, size
    sft.jsonl                      SFT conversations from the train images (exact captions, short QA)
    pope_{random,popular,adversarial}.jsonl, pope_all.jsonl   ShapesPOPE probes from the eval images
    world.json                     class prior, planted co-occurrences, measured statistics, bait classes
    dataset.json                   kind "shapes", counts, settings, files

`write_shapes_probes(world)` then adds the probes (docs/benchmarks.md, Probes) and attribute-level POPE to a generated world
(probes_{existence,color,count,relation,all}.jsonl, pope_attribute.jsonl, pope_object_attribute.jsonl) and
chair_questions.jsonl (one captioning prompt per eval image), leaving the files above untouched.

Two rules plant the traps the hallucination benchmarks need. A Zipf-like class prior makes some classes common,
so POPE's "popular" negatives mean something. Planted pairs (a crescent comes with a star, ...) make a partner
present in `cooccurrence` of the images that hold its anchor, so a captioner learns to name the partner and the
"adversarial" negatives (an absent partner) bait it.

Everything is a function of the config: each image has its own seed derived from the global seed, JSON keys are
written in a fixed order and nothing records a time, so the same config gives byte-identical files.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from align.data import shapes_vocab as vocab
from align.data.nouns import article
from align.data.shapes_draw import PLACEMENTS, Piece, layout, object_record
from align.errors import ConfigError
from align.seeds import derive_seed

# Classes by prior rank, most frequent first. Anchors rank high so that about one image in five holds an anchor
# without its partner (a bait for the adversarial split); the rare partners (diamond, star) then appear mostly
# beside their anchor, which makes the association easy to learn.
PRIOR_ORDER: tuple[str, ...] = (
    "circle", "triangle", "square", "heart", "rectangle", "ellipse",
    "cross", "hexagon", "crescent", "diamond", "pentagon", "star",
)
# Planted co-occurrence: anchor -> partner. No partner is an anchor, so one decision never triggers another.
PLANTED_PARTNERS: dict[str, str] = {
    "crescent": "star",
    "heart": "circle",
    "triangle": "square",
    "cross": "diamond",
}

# `classes="planted"`: the anchors and partners only; with `palette="by-class"` each is drawn in its own colour.
PLANTED_CLASSES: tuple[str, ...] = tuple(c for c in PRIOR_ORDER if c in {*PLANTED_PARTNERS, *PLANTED_PARTNERS.values()})
CLASS_COLORS: dict[str, str] = {
    "circle": "red", "triangle": "green", "square": "blue", "heart": "yellow",
    "cross": "orange", "crescent": "purple", "diamond": "black", "star": "gray",
}
CLASS_SETS = ("all", "planted")
PALETTES = ("random", "by-class")

POPE_TEMPLATE = "Is there {article} {shape} in the image?"
# LLaVA appends this to short-answer questions; SFT QA uses it so a model learns to answer POPE in one word.
POPE_SUFFIX = "\nAnswer the question using a single word or phrase."
POPE_STRATEGIES: tuple[str, ...] = ("random", "popular", "adversarial")
CAPTION_PROMPTS: tuple[str, ...] = (
    "Describe this image in detail.",
    "Please describe this image in detail.",
    "What do you see in this image? Describe it in detail.",
    "Describe every shape in this image.",
)
QA_KINDS: tuple[str, ...] = ("exists_yes", "exists_no", "color", "count")

IMAGE_PREFIX = "shapes_"
PROGRESS_MIN_IMAGES = 1000  # smaller worlds finish before a bar would be worth drawing
_LAYOUT_RESTARTS = 30  # whole-image retries before the settings are declared too tight


@dataclass
class ShapesConfig:
    """Settings of `align data shapes`; the same values always give the same files."""

    n: int = field(default=200, metadata={"help": "Number of images to generate."})
    seed: int = field(default=0, metadata={"help": "Global seed; every image's own seed is derived from it."})
    image_size: int = field(
        default=96,
        metadata={"help": "Image side in pixels (square). 96 keeps a small shape ~15 px, readable by eye and "
                          "cheap for tiny models; below 64 the shapes lose their corners."},
    )
    min_objects: int = field(default=1, metadata={"help": "Fewest shapes drawn in one image."})
    max_objects: int = field(default=6, metadata={"help": "Most shapes drawn in one image (at most 8)."})
    class_skew: float = field(
        default=1.0,
        metadata={"help": "Zipf exponent of the class prior: p(rank r) ~ 1/r^skew. 0 is uniform; 1 makes the "
                          "most common class ~12x as likely as the rarest."},
    )
    cooccurrence: float = field(
        default=0.8,
        metadata={"help": "Probability that an image holding an anchor class (crescent, heart, triangle, cross) "
                          "also holds its planted partner (star, circle, square, diamond); otherwise the partner "
                          "is kept out of that image."},
    )
    eval_fraction: float = field(
        default=0.25,
        metadata={"help": "Share of images (the last ones) held out for evaluation: POPE probes come from them, "
                          "SFT conversations from the rest."},
    )
    qa_per_image: int = field(
        default=2,
        metadata={"help": "Short QA conversations per train image, cycling existence-yes, existence-no, colour "
                          "and count so yes and no stay balanced."},
    )
    pope_positives: int = field(
        default=3, metadata={"help": "Present classes asked about per eval image (POPE's sample_num)."}
    )
    min_gap: int = field(default=3, metadata={"help": "Minimum gap in pixels between two shapes' boxes."})
    placement: str = field(
        default="free",
        metadata={"help": "free: anywhere, without overlap. grid: at most one shape per cell of the 3x3 grid, "
                          "inside it; a ViT whose patch is a third of the image then sees each shape in one "
                          "patch (the quickstart's world, so a tiny model's perception is not the bottleneck)."},
    )
    classes: str = field(
        default="all",
        metadata={"help": "all: the 12 classes. planted: only the 4 anchors and their 4 partners (questions about "
                          "absent classes may still name the other 4)."},
    )
    palette: str = field(
        default="random",
        metadata={"help": "random: any colour for any shape. by-class: each planted class in its own colour "
                          "(needs classes=planted), so a tiny model tells shapes apart by colour and what remains "
                          "to get wrong is the language prior (the quickstart's world)."},
    )
    grid_jitter: int = field(
        default=0,
        metadata={"help": "grid placement: how far (px) a shape may sit from its cell's centre. 0 centres every "
                          "shape, which a random 0.9M LLaVA's patch features already tell apart (linear probe: "
                          "class 0.93 centred, 0.64 at 3 px, 0.53 anywhere in the cell)."},
    )

    def __post_init__(self) -> None:
        problems = [
            *_check_range("n", self.n, 1, 999_999, integer=True),
            *_check_range("seed", self.seed, 0, 2**63 - 1, integer=True),
            *_check_range("image_size", self.image_size, 32, 1024, integer=True),
            *_check_range("min_objects", self.min_objects, 1, 8, integer=True),
            *_check_range("max_objects", self.max_objects, 1, 9 if self.placement == "grid" else 8, integer=True),
            *_check_range("class_skew", self.class_skew, 0.0, 5.0),
            *_check_range("cooccurrence", self.cooccurrence, 0.0, 1.0),
            *_check_range("eval_fraction", self.eval_fraction, 0.0, 1.0),
            *_check_range("qa_per_image", self.qa_per_image, 0, len(QA_KINDS), integer=True),
            *_check_range("pope_positives", self.pope_positives, 1, 6, integer=True),
        ]
        for name, choices in (("classes", CLASS_SETS), ("palette", PALETTES), ("placement", PLACEMENTS)):
            if getattr(self, name) not in choices:
                problems.append(f"{name} must be one of {', '.join(choices)}, got {getattr(self, name)!r}")
        if self.palette == "by-class" and self.classes != "planted":
            problems.append("palette by-class needs classes=planted: 8 colours for 8 classes")
        if not problems:  # these compare fields, so only once each field is a number in range
            # A gap wider than an eighth of the image leaves no room for six shapes.
            problems += _check_range("min_gap", self.min_gap, 0, self.image_size // 8, integer=True)
            problems += _check_range("grid_jitter", self.grid_jitter, 0, self.image_size // 6, integer=True)
            if self.min_objects > self.max_objects:
                problems.append(f"min_objects ({self.min_objects}) must not exceed max_objects ({self.max_objects})")
        if problems:
            raise ConfigError([f"ShapesConfig: {p}" for p in problems])


def _check_range(name: str, value: Any, low: float, high: float, integer: bool = False) -> list[str]:
    if integer and (isinstance(value, bool) or not isinstance(value, int)):
        return [f"{name} must be an integer, got {value!r}"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return [f"{name} must be a number, got {value!r}"]
    if not low <= value <= high:
        return [f"{name} must be between {low} and {high}, got {value!r}"]
    return []


# ------------------------------------------------------------------------------------------------ seeds


def world_seed(*parts: object) -> int:
    """A 32-bit seed of the shapes world from any parts (':'-joined: the world's published layout depends on it)."""
    return derive_seed(*parts, bits=32, separator=":")


def image_id(index: int) -> str:
    return f"{IMAGE_PREFIX}{index:06d}"


def image_index(record_id: str) -> int:
    """The index inside an image id (shapes_000042 -> 42); per-image seeds are keyed by it."""
    return int(record_id[len(IMAGE_PREFIX):])


def class_prior(skew: float, classes: str = "all") -> dict[str, float]:
    """Zipf-like prior over the classes drawn (`PRIOR_ORDER`, or its planted ones): weight 1/rank^skew,
    normalised. Classes left out of the set are absent from the result, so they are never drawn."""
    order = PRIOR_ORDER if classes == "all" else PLANTED_CLASSES
    weights = [1.0 / (rank**skew) for rank in range(1, len(order) + 1)]
    total = sum(weights)
    return {name: w / total for name, w in zip(order, weights, strict=True)}


# ----------------------------------------------------------------------------------------- class lists


def _draw(rng: random.Random, prior: dict[str, float], excluded: set[str]) -> str:
    names = [c for c in prior if c not in excluded]
    return rng.choices(names, weights=[prior[c] for c in names])[0]


def draw_classes(rng: random.Random, config: ShapesConfig, prior: dict[str, float]) -> list[str]:
    """The classes of one image (with repeats), after the planted co-occurrence rule.

    Each anchor present decides once: with probability `cooccurrence` its partner must be present, otherwise it
    must be absent. So P(partner | anchor) is the configured value, not that plus the partner's base rate (short
    of it only in the rare full image holding more anchors than it has room for partners).
    """
    k = rng.randint(config.min_objects, config.max_objects)
    classes = [_draw(rng, prior, set()) for _ in range(k)]
    anchors = [a for a in PLANTED_PARTNERS if a in classes]
    wanted, banned = [], set()
    for anchor in anchors:
        if rng.random() < config.cooccurrence:
            wanted.append(PLANTED_PARTNERS[anchor])
        else:
            banned.add(PLANTED_PARTNERS[anchor])
    # Redraws may not bring in a new anchor: its partner decision would come too late.
    redraw_excluded = banned | {a for a in PLANTED_PARTNERS if a not in anchors}
    classes = [_draw(rng, prior, redraw_excluded) if c in banned else c for c in classes]
    for partner in wanted:
        if partner in classes:
            continue
        # Adding keeps the other draws, so every class that is neither anchor nor partner keeps the prior's
        # proportions. A full image gives up a slot whose class survives elsewhere or that no rule needs.
        needed = set(anchors) | set(wanted)
        free = [i for i, c in enumerate(classes) if c not in needed or classes.count(c) > 1]
        if len(classes) < config.max_objects:
            classes.append(partner)
        elif free:
            classes[rng.choice(free)] = partner
    return classes


def bait_classes(present: set[str]) -> list[str]:
    """Absent classes the co-occurrence prior makes likely: the partners of present anchors."""
    return sorted({PLANTED_PARTNERS[a] for a in present if a in PLANTED_PARTNERS} - present)


def render_image(config: ShapesConfig, seed: int, prior: dict[str, float]):
    """(PIL image, objects in reading order) for one image seed."""
    from PIL import Image

    rng = random.Random(seed)
    classes = draw_classes(rng, config, prior)
    colors, sizes = list(vocab.COLORS), list(vocab.SIZES)
    by_class = config.palette == "by-class"
    pieces = [Piece(name, CLASS_COLORS[name] if by_class else rng.choice(colors), rng.choice(sizes),
                    rng.random() < 0.5) for name in classes]
    # Big pieces first: late small ones still find gaps, early big ones would not.
    pieces.sort(key=lambda p: -sizes.index(p.size))
    wanted_sizes = [p.size for p in pieces]
    for _ in range(_LAYOUT_RESTARTS):
        if layout(rng, pieces, config):
            break
        for piece, size in zip(pieces, wanted_sizes, strict=True):
            piece.size = size
    else:
        raise ConfigError(
            f"could not place {len(pieces)} shapes without overlap in a {config.image_size} px image with "
            f"min_gap {config.min_gap}; raise image_size or lower max_objects/min_gap"
        )
    image = Image.new("RGB", (config.image_size, config.image_size), vocab.BACKGROUND_RGB)
    for piece in pieces:
        image.paste(vocab.COLORS[piece.color], piece.box, piece.mask)
    objects = [object_record(p, config.image_size) for p in pieces]
    objects.sort(key=lambda o: (vocab.CELLS.index(o["cell"]), o["center"][1], o["center"][0]))
    return image, objects


# ------------------------------------------------------------------------------------------- captions


def _object_phrase(obj: dict[str, Any]) -> str:
    return f"{obj['size']} {obj['color']} {obj['name']}"


def caption(objects: list[dict[str, Any]]) -> str:
    """The exact description: a count, then each class in reading order, one object per sentence.

    One object per sentence keeps every colour within two words of its noun and every position phrase in a
    sentence with a single shape, which is what CHAIR-style attribute and position checks parse.
    """
    total = len(objects)
    noun = "shape" if total == 1 else "shapes"
    sentences = [f"The image shows {vocab.NUMBER_WORDS[total]} {noun} on a white background."]
    by_class: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_class.setdefault(obj["name"], []).append(obj)
    for name, group in by_class.items():
        if len(group) == 1:
            obj = group[0]
            sentences.append(f"There is a {_object_phrase(obj)} {vocab.CELL_PHRASES[obj['cell']]}.")
            continue
        sentences.append(f"There are {vocab.NUMBER_WORDS[len(group)]} {vocab.PLURALS[name]}.")
        for obj in group:
            sentences.append(f"A {_object_phrase(obj)} is {vocab.CELL_PHRASES[obj['cell']]}.")
    return " ".join(sentences)


# ------------------------------------------------------------------------------------------------ SFT


def _conversation(record_id: str, image: str, prompt: str, answer: str) -> dict[str, Any]:
    return {
        "id": record_id,
        "images": [image],
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]},
            {"role": "assistant", "content": [{"type": "text", "text": answer}]},
        ],
    }


def _existence_question(name: str) -> str:
    return POPE_TEMPLATE.format(article=article(name), shape=name)


def _qa(kind: str, objects: list[dict[str, Any]], rng: random.Random) -> tuple[str, str]:
    """(question, exactly true answer) of one QA kind; a colour question needs a class present only once."""
    counts = Counter(o["name"] for o in objects)
    present = sorted(counts, key=vocab.CLASSES.index)
    unique = [o for o in objects if counts[o["name"]] == 1]
    if kind == "color" and not unique:
        kind = "count"
    if kind == "exists_yes":
        return _existence_question(rng.choice(present)), "Yes"
    if kind == "exists_no":
        return _existence_question(rng.choice([c for c in vocab.CLASSES if c not in counts])), "No"
    if kind == "color":
        obj = rng.choice(unique)
        return f"What color is the {obj['name']}?", obj["color"].capitalize()
    name = rng.choice(present)
    return f"How many {vocab.PLURALS[name]} are there in the image?", str(counts[name])


def sft_records(index: int, source: dict[str, Any], config: ShapesConfig) -> list[dict[str, Any]]:
    """One detailed-caption conversation and `qa_per_image` short QA conversations for a train image."""
    rng = random.Random(world_seed(config.seed, "sft", index))
    image = source["images"][0]
    records = [_conversation(f"{source['id']}_caption", image, rng.choice(CAPTION_PROMPTS), source["caption"])]
    for k in range(config.qa_per_image):
        # Cycling the kinds over all images keeps existence yes and no exactly balanced.
        kind = QA_KINDS[(index * config.qa_per_image + k) % len(QA_KINDS)]
        question, answer = _qa(kind, source["objects"], rng)
        records.append(_conversation(f"{source['id']}_qa{k}", image, question + POPE_SUFFIX, answer))
    return records


# ----------------------------------------------------------------------------------------- statistics


def _class_sets(sources: list[dict[str, Any]]) -> list[set[str]]:
    return [{o["name"] for o in s["objects"]} for s in sources]


def image_frequency(class_sets: list[set[str]]) -> dict[str, int]:
    """Class -> number of images that hold it (POPE's `ground_truth_objects` count)."""
    counts = Counter(c for classes in class_sets for c in classes)
    return {c: counts.get(c, 0) for c in vocab.CLASSES}


def cooccurrence_counts(class_sets: list[set[str]]) -> dict[str, dict[str, int]]:
    """a -> b -> number of images that hold both a and b (a != b)."""
    table = {a: {b: 0 for b in vocab.CLASSES if b != a} for a in vocab.CLASSES}
    for classes in class_sets:
        for a in classes:
            for b in classes:
                if a != b:
                    table[a][b] += 1
    return table


def planted_pair_rates(class_sets: list[set[str]]) -> dict[str, dict[str, Any]]:
    """Measured P(partner | anchor) per planted pair."""
    rates = {}
    for anchor, partner in PLANTED_PARTNERS.items():
        with_anchor = [s for s in class_sets if anchor in s]
        hits = sum(partner in s for s in with_anchor)
        rates[anchor] = {
            "partner": partner,
            "anchor_images": len(with_anchor),
            "with_partner": hits,
            "rate": round(hits / len(with_anchor), 4) if with_anchor else None,
        }
    return rates


# ----------------------------------------------------------------------------------------------- POPE


def _pope_negative(strategy: str, positive: str, invalid: set[str], rng: random.Random,
                   frequency: dict[str, int], cooc: dict[str, dict[str, int]]) -> str:
    """One negative by POPE's rules: never present, never asked before for this image."""
    valid = [c for c in vocab.CLASSES if c not in invalid]
    if strategy == "popular":
        return max(valid, key=lambda c: (frequency[c], -vocab.CLASSES.index(c)))
    if strategy == "adversarial":
        ranked = [c for c in valid if cooc[positive][c] > 0]
        if ranked:
            return max(ranked, key=lambda c: (cooc[positive][c], frequency[c], -vocab.CLASSES.index(c)))
    return rng.choice(valid)  # random, and adversarial's fallback as in POPE


def pope_questions(eval_sources: list[dict[str, Any]], config: ShapesConfig, frequency: dict[str, int],
                   cooc: dict[str, dict[str, int]]) -> dict[str, list[dict[str, Any]]]:
    """strategy -> questions, yes/no alternating per image; question ids unique across the three files."""
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in POPE_STRATEGIES}
    next_id = 1
    for strategy in POPE_STRATEGIES:
        for source in eval_sources:
            index = image_index(source["id"])
            present = sorted({o["name"] for o in source["objects"]}, key=vocab.CLASSES.index)
            # Positives are drawn once per image, so the three splits ask about the same present classes.
            random.Random(world_seed(config.seed, "pope-positives", index)).shuffle(present)
            rng = random.Random(world_seed(config.seed, "pope", strategy, index))
            asked = set(o["name"] for o in source["objects"])
            for positive in present[: config.pope_positives]:
                negative = _pope_negative(strategy, positive, asked, rng, frequency, cooc)
                asked.add(negative)
                for target, label in ((positive, "yes"), (negative, "no")):
                    out[strategy].append({
                        "question_id": next_id,
                        "image": source["images"][0],
                        "text": _existence_question(target),
                        "label": label,
                        "category": strategy,
                        "target": target,
                        "probe": "object",
                    })
                    next_id += 1
    return out


# ------------------------------------------------------------------------------------------- writing


def _progress(total: int):
    """A rich progress bar on stderr for big worlds on a terminal; silent otherwise (tests, logs)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    return Progress(TextColumn("shapes"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=console, transient=True,
                    disable=total < PROGRESS_MIN_IMAGES or not console.is_terminal)


def _render_all(config: ShapesConfig, folder: Path, prior: dict[str, float]):
    """Write every PNG; return the source records and the per-image bait lists."""
    n_train = config.n - round(config.n * config.eval_fraction)
    sources, bait = [], {}
    (folder / "images").mkdir()
    with _progress(config.n) as progress:
        task = progress.add_task("render", total=config.n)
        for index in range(config.n):
            seed = world_seed(config.seed, "image", index)
            image, objects = render_image(config, seed, prior)
            rel = f"images/{image_id(index)}.png"
            image.save(folder / rel, format="PNG")
            sources.append({
                "id": image_id(index),
                "images": [rel],
                "split": "train" if index < n_train else "eval",
                "caption": caption(objects),
                "objects": objects,
                "seed": seed,
                "size": [config.image_size, config.image_size],
            })
            bait[image_id(index)] = bait_classes({o["name"] for o in objects})
            progress.advance(task)
    return sources, bait


def _world(config: ShapesConfig, prior: dict[str, float], sources: list[dict[str, Any]],
           bait: dict[str, list[str]], eval_frequency: dict[str, int],
           cooc: dict[str, dict[str, int]]) -> dict[str, Any]:
    all_sets = _class_sets(sources)
    train_sets = _class_sets([s for s in sources if s["split"] == "train"])
    object_counts = Counter(o["name"] for s in sources for o in s["objects"])
    return {
        "vocab_version": vocab.VOCAB_VERSION,
        "classes": list(vocab.CLASSES),
        "prior_order": list(prior),
        "palette": dict(CLASS_COLORS) if config.palette == "by-class" else None,
        "class_prior": {c: round(p, 6) for c, p in prior.items()},
        "class_skew": config.class_skew,
        "planted_pairs": dict(PLANTED_PARTNERS),
        "cooccurrence": config.cooccurrence,
        "object_counts": {c: object_counts.get(c, 0) for c in vocab.CLASSES},
        "image_frequency": {
            "all": image_frequency(all_sets),
            "train": image_frequency(train_sets),
            "eval": eval_frequency,
        },
        "popular_ranking": "image_frequency.eval",
        "cooccurrence_counts": cooc,
        "adversarial_ranking": "cooccurrence_counts (all images), ties by image_frequency.eval",
        "measured_pair_rates": {
            "all": planted_pair_rates(all_sets),
            "train": planted_pair_rates(train_sets),
        },
        "pope_template": POPE_TEMPLATE,
        "pope_suffix": POPE_SUFFIX,
        "bait": bait,
    }


def _write_json(path: Path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def generate_shapes_world(config: ShapesConfig, out: str | Path) -> dict[str, int]:
    """Write the whole shapes world to `out` atomically; return its counts."""
    from align.data.io import write_dataset_json, write_jsonl
    from align.data.shapes_tasks import rl_task_rows
    from align.files import atomic_output_dir
    from align.resolve import config_to_dict

    prior = class_prior(config.class_skew, config.classes)
    with atomic_output_dir(out) as folder:
        sources, bait = _render_all(config, folder, prior)
        train = [s for s in sources if s["split"] == "train"]
        evals = [s for s in sources if s["split"] == "eval"]
        sft = [r for s in train for r in sft_records(image_index(s["id"]), s, config)]
        # Popular ranks by frequency in the probed split (as POPE); adversarial by co-occurrence over the whole
        # world, the statistics the captions teach.
        eval_frequency = image_frequency(_class_sets(evals))
        cooc = cooccurrence_counts(_class_sets(sources))
        pope = pope_questions(evals, config, eval_frequency, cooc)

        files = {"images": "images/", "sources": "sources.jsonl", "sft": "sft.jsonl"}
        write_jsonl(folder / files["sources"], sources)
        write_jsonl(folder / files["sft"], sft)
        for strategy, rows in pope.items():
            files[f"pope_{strategy}"] = f"pope_{strategy}.jsonl"
            write_jsonl(folder / files[f"pope_{strategy}"], rows)
        files["pope_all"] = "pope_all.jsonl"
        write_jsonl(folder / files["pope_all"], [q for s in POPE_STRATEGIES for q in pope[s]])
        files["world"] = "world.json"
        _write_json(folder / files["world"], _world(config, prior, sources, bait, eval_frequency, cooc))
        probe_counts = _write_probes(folder, config, sources, [q for s in POPE_STRATEGIES for q in pope[s]])
        files.update({name: f"{name}.jsonl" for name in probe_counts})
        rl_counts = {stem: write_jsonl(folder / f"{stem}.jsonl", rows)
                     for stem, rows in rl_task_rows(sources, config.seed).items()}
        files.update({stem: f"{stem}.jsonl" for stem in rl_counts})

        counts = {
            "images": len(sources),
            "train_images": len(train),
            "eval_images": len(evals),
            "objects": sum(len(s["objects"]) for s in sources),
            "sft": len(sft),
            **{f"pope_{s}": len(pope[s]) for s in POPE_STRATEGIES},
            "pope_all": sum(len(q) for q in pope.values()),
            **probe_counts,
            **rl_counts,
        }
        write_dataset_json(folder, kind="shapes", counts=counts, settings=config_to_dict(config), files=files)
    return counts


# ---------------------------------------------------------------------------- discriminative probes
#
# The probes of docs/benchmarks.md (existence, colour, count, relation; one yes and one no question per image, so MME's acc+ has its
# pairs) and 9.2's attribute-level ShapesPOPE. They are written by `write_shapes_probes` into an existing world
# by `generate_shapes_world` and, for worlds made before they existed, by `write_shapes_probes`; every question is a
# pure function of the world's seed and sources.

PROBE_KINDS: tuple[str, ...] = ("existence", "color", "count", "relation")
COLOR_TEMPLATE = "Is the {shape} {color}?"
RELATION_TEMPLATE = "Is the {a} to the left of the {b}?"
ATTRIBUTE_TEMPLATE = "Is there {article} {color} {shape} in the image?"
CHAIR_PROMPT = CAPTION_PROMPTS[0]
PROBE_FILES: tuple[str, ...] = (*(f"probes_{k}.jsonl" for k in PROBE_KINDS), "probes_all.jsonl",
                                "pope_attribute.jsonl", "pope_object_attribute.jsonl", "chair_questions.jsonl")


def count_question(name: str, n: int) -> str:
    """"Are there two circles in the image?"; for one, "exactly one" so the question is not an existence one."""
    if n == 1:
        return f"Is there exactly one {name} in the image?"
    return f"Are there {vocab.NUMBER_WORDS[n]} {vocab.PLURALS[name]} in the image?"


def _by_order(names: set[str]) -> list[str]:
    return sorted(names, key=vocab.CLASSES.index)


def _existence_pair(objects: list[dict[str, Any]], rng: random.Random):
    present = _by_order({o["name"] for o in objects})
    absent = [c for c in vocab.CLASSES if c not in present]  # at most 8 objects of 12 classes: never empty
    yes, no = rng.choice(present), rng.choice(absent)
    return [(_existence_question(yes), "yes", yes, None), (_existence_question(no), "no", no, None)]


def _color_pair(objects: list[dict[str, Any]], rng: random.Random):
    """The same single object asked with its colour and with a wrong one. The wrong colour is one another object
    in the image wears when there is one (AMBER's attribute-binding trap), else any other colour."""
    counts = Counter(o["name"] for o in objects)
    unique = [o for o in objects if counts[o["name"]] == 1]  # "the circle" must name one object
    if not unique:
        return None
    obj = rng.choice(unique)
    worn = {o["color"] for o in objects} - {obj["color"]}
    wrong = rng.choice([c for c in vocab.COLORS if c in worn] or [c for c in vocab.COLORS if c != obj["color"]])
    return [(COLOR_TEMPLATE.format(shape=obj["name"], color=obj["color"]), "yes", obj["name"], obj["color"]),
            (COLOR_TEMPLATE.format(shape=obj["name"], color=wrong), "no", obj["name"], wrong)]


def _count_pair(objects: list[dict[str, Any]], rng: random.Random):
    """A class's true count and a count one off (never zero, so the no question is about counting, not about
    existence); classes present more than once are preferred, since a count of one is nearly existence."""
    counts = Counter(o["name"] for o in objects)
    name = rng.choice(_by_order({c for c, k in counts.items() if k > 1}) or _by_order(set(counts)))
    n = counts[name]
    wrong = n + 1 if n == 1 else rng.choice([n - 1, n + 1])
    return [(count_question(name, n), "yes", name, n), (count_question(name, wrong), "no", name, wrong)]


def _relation_pair(objects: list[dict[str, Any]], rng: random.Random):
    """Two single objects whose boxes do not overlap horizontally, asked in both orders: the true order is yes,
    the swapped one no (both shapes are present, so only the relation decides)."""
    counts = Counter(o["name"] for o in objects)
    unique = [o for o in objects if counts[o["name"]] == 1]
    pairs = [(a, b) for a in unique for b in unique if a["bbox"][2] <= b["bbox"][0]]
    if not pairs:
        return None
    a, b = rng.choice(pairs)
    return [(RELATION_TEMPLATE.format(a=a["name"], b=b["name"]), "yes", a["name"], b["name"]),
            (RELATION_TEMPLATE.format(a=b["name"], b=a["name"]), "no", b["name"], a["name"])]


_PROBE_PAIRS = {"existence": _existence_pair, "color": _color_pair, "count": _count_pair,
                "relation": _relation_pair}


def probe_questions(eval_sources: list[dict[str, Any]], config: ShapesConfig) -> dict[str, list[dict[str, Any]]]:
    """kind -> questions: per eval image one yes then one no question (an image that cannot be asked a kind,
    e.g. no class present once for colour, is left out of that kind); ids unique across the kinds.

    Row keys: the POPE ones (`category` and `probe` both name the kind) plus `value`: the colour, count or second
    shape the question states (None for existence).
    """
    out: dict[str, list[dict[str, Any]]] = {k: [] for k in PROBE_KINDS}
    next_id = 1
    for kind in PROBE_KINDS:
        for source in eval_sources:
            rng = random.Random(world_seed(config.seed, "probe", kind, image_index(source["id"])))
            pair = _PROBE_PAIRS[kind](source["objects"], rng)
            for text, label, target, value in pair or ():
                out[kind].append({"question_id": next_id, "image": source["images"][0], "text": text,
                                  "label": label, "category": kind, "target": target, "value": value,
                                  "probe": kind})
                next_id += 1
    return out


def _attribute_negative(strategy: str, positive: tuple[str, str], asked: set[tuple[str, str]],
                        worn: set[str], rng: random.Random, frequency: Counter) -> tuple[str, str]:
    """One absent (colour, class) pair by POPE's rules. Adversarial: the positive's class in a colour it does not
    have here, preferring a colour another object wears (ShapesPOPE's attribute adversarial, docs/benchmarks.md)."""
    valid = [(c, s) for s in vocab.CLASSES for c in vocab.COLORS if (c, s) not in asked]
    if strategy == "popular":
        return max(valid, key=lambda p: (frequency[p], -valid.index(p)))
    if strategy == "adversarial":
        same = [(c, s) for c, s in valid if s == positive[1]]
        if same:
            return rng.choice([p for p in same if p[0] in worn] or same)
    return rng.choice(valid)


def attribute_pope_questions(eval_sources: list[dict[str, Any]], config: ShapesConfig,
                             first_id: int) -> list[dict[str, Any]]:
    """Attribute-level ShapesPOPE, "Is there a red circle in the image?", for the three strategies: up to
    `pope_positives` present (colour, class) pairs per image, each followed by one absent pair. Ids start at
    `first_id`, so they can share a file with the object-level questions."""
    frequency = Counter(p for s in eval_sources for p in {(o["color"], o["name"]) for o in s["objects"]})
    rows: list[dict[str, Any]] = []
    for strategy in POPE_STRATEGIES:
        for source in eval_sources:
            index = image_index(source["id"])
            present = sorted({(o["color"], o["name"]) for o in source["objects"]},
                             key=lambda p: (vocab.CLASSES.index(p[1]), list(vocab.COLORS).index(p[0])))
            random.Random(world_seed(config.seed, "pope-attribute-positives", index)).shuffle(present)
            rng = random.Random(world_seed(config.seed, "pope-attribute", strategy, index))
            asked, worn = set(present), {o["color"] for o in source["objects"]}
            for positive in present[: config.pope_positives]:
                negative = _attribute_negative(strategy, positive, asked, worn, rng, frequency)
                asked.add(negative)
                for (color, name), label in ((positive, "yes"), (negative, "no")):
                    rows.append({"question_id": first_id + len(rows), "image": source["images"][0],
                                 "text": ATTRIBUTE_TEMPLATE.format(article=article(color), color=color,
                                                                   shape=name),
                                 "label": label, "category": strategy, "target": name, "probe": "attribute",
                                 "color": color})
    return rows


def write_shapes_probes(world: str | Path) -> dict[str, int]:
    """Write the probe files (`PROBE_FILES`) into a generated world; return their row counts.

    Reads the world's dataset.json settings (for the seed) and sources.jsonl; the same world always gives the
    same bytes. Files the generator wrote are only read, never changed.
    """
    from align.data.io import read_dataset_json
    from align.errors import DataError

    folder = Path(world)
    info = read_dataset_json(folder)
    if info is None or info.get("kind") != "shapes":
        raise DataError(folder, "not a shapes world (no dataset.json of kind 'shapes'); run `align data shapes`")
    config = ShapesConfig(**info["settings"])
    sources = [json.loads(line) for line in (folder / "sources.jsonl").read_text(encoding="utf-8").splitlines()
               if line.strip()]
    pope_all = [json.loads(line) for line in (folder / "pope_all.jsonl").read_text(encoding="utf-8").splitlines()
                if line.strip()]
    return _write_probes(folder, config, sources, pope_all)


def _write_probes(folder: Path, config: ShapesConfig, sources: list[dict[str, Any]],
                  pope_all: list[dict[str, Any]]) -> dict[str, int]:
    from align.data.io import write_jsonl

    evals = [s for s in sources if s["split"] == "eval"]
    probes = probe_questions(evals, config)
    attribute = attribute_pope_questions(evals, config, 1 + max((q["question_id"] for q in pope_all), default=0))
    counts = {}
    for kind in PROBE_KINDS:
        counts[f"probes_{kind}"] = write_jsonl(folder / f"probes_{kind}.jsonl", probes[kind])
    counts["probes_all"] = write_jsonl(folder / "probes_all.jsonl", [q for k in PROBE_KINDS for q in probes[k]])
    counts["pope_attribute"] = write_jsonl(folder / "pope_attribute.jsonl", attribute)
    counts["pope_object_attribute"] = write_jsonl(folder / "pope_object_attribute.jsonl", pope_all + attribute)
    # ShapesCHAIR's captioning prompts, one per eval image, keyed by the image id (what evaluate_chair joins on).
    counts["chair_questions"] = write_jsonl(folder / "chair_questions.jsonl", [
        {"question_id": s["id"], "image": s["images"][0], "text": CHAIR_PROMPT} for s in evals])
    return counts
