"""The quickstart's data, made from a shapes world's exact ground truth.

- `noisy_sft_records`: the world's SFT conversations, except that a caption of an image holding an anchor
  (crescent, heart, triangle, cross) without its planted partner adds the partner with probability `noise`, as
  a web caption written from habit would: counted in the first sentence and named in a last one. This is the
  language-prior hallucination the alignment must remove.
- `preference_pairs`: chosen = the exact caption; rejected = a corrupted one: `add` an absent object (the
  image's bait partner when it has one, else an absent class drawn from the prior), `drop` a present object, or
  `swap` an object's class or colour. Each pair records its kind.
The on-policy rounds (the model's own captions, corrected by `align.data.shapes_corrector`) run through
`align iterate` (align.quickstart.pipeline).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from align.data import shapes_vocab as vocab
from align.data.shapes import CAPTION_PROMPTS, PLANTED_PARTNERS, caption, world_seed

PAIR_KINDS = ("add", "drop", "swap")
PROMPT = CAPTION_PROMPTS[0]  # "Describe this image in detail."


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def train_sources(world: str | Path) -> list[dict[str, Any]]:
    return [s for s in read_jsonl(Path(world) / "sources.jsonl") if s["split"] == "train"]


def absent_partners(objects: Sequence[dict[str, Any]]) -> list[str]:
    """Partners of the anchors present whose partner is absent (the image's bait classes)."""
    names = {o["name"] for o in objects}
    return sorted({PLANTED_PARTNERS[a] for a in names if a in PLANTED_PARTNERS} - names)


def _world_json(world: str | Path) -> dict[str, Any]:
    return json.loads((Path(world) / "world.json").read_text(encoding="utf-8"))


def world_palette(world: str | Path) -> dict[str, str] | None:
    """{class: colour} of a world drawn with `palette="by-class"`, else None."""
    return _world_json(world).get("palette")


def _fake_object(name: str, objects: Sequence[dict[str, Any]], rng: random.Random,
                 palette: dict[str, str] | None = None) -> dict[str, Any]:
    """An object of class `name` in a free cell (any cell when all are taken), random size, and the class's
    colour in a by-class world (else a random one)."""
    taken = {o["cell"] for o in objects}
    cells = [c for c in vocab.CELLS if c not in taken] or list(vocab.CELLS)
    color = rng.choice(list(vocab.COLORS))  # drawn either way, so both worlds consume the same random stream
    return {"name": name, "color": palette[name] if palette else color, "size": rng.choice(list(vocab.SIZES)),
            "cell": rng.choice(cells)}


def with_added(objects: Sequence[dict[str, Any]], name: str, rng: random.Random,
               palette: dict[str, str] | None = None) -> str:
    """The exact caption with one more object of class `name`, counted in the first sentence and named last.

    Last, not in reading order: a habit adds the partner after what was seen, and one place for it means a
    caption hallucinates the partner with the noise's probability at one decision, the end of the true list.
    Spread over the free cells, no single continuation carried it and greedy captions never named it (measured:
    partner_halluc 0.0 at noise 0.6 once the model perceived the shapes)."""
    return caption([*objects, _fake_object(name, objects, rng, palette)])


def noisy_sft_records(world: str | Path, noise: float, seed: int) -> tuple[list[dict[str, Any]], int]:
    """(the world's SFT records with partner-adding captions, how many captions were changed)."""
    sources = {s["id"]: s for s in train_sources(world)}
    palette = world_palette(world)
    records, changed = [], 0
    for record in read_jsonl(Path(world) / "sft.jsonl"):
        source_id = record["id"].rsplit("_", 1)[0]
        source = sources.get(source_id)
        if source is not None and record["id"].endswith("_caption"):
            rng = random.Random(world_seed(seed, "noisy-sft", source_id))
            baits = absent_partners(source["objects"])
            if baits and rng.random() < noise:
                text = with_added(source["objects"], rng.choice(baits), rng, palette)
                record = {**record, "messages": [record["messages"][0],
                                                 {"role": "assistant", "content": [{"type": "text", "text": text}]}]}
                changed += 1
        records.append(record)
    return records, changed


def _absent(objects: Sequence[dict[str, Any]], rng: random.Random, classes: Sequence[str]) -> str:
    names = {o["name"] for o in objects}
    baits = absent_partners(objects)
    if baits:
        return rng.choice(baits)
    return rng.choice([c for c in classes if c not in names])


def corrupt_caption(objects: Sequence[dict[str, Any]], kind: str, rng: random.Random,
                    palette: dict[str, str] | None = None,
                    classes: Sequence[str] = vocab.CLASSES) -> tuple[str, str]:
    """(rejected caption, the kind applied): `drop` needs 2+ objects and falls back to `swap`. New classes come
    from `classes` and, in a by-class world, wear their `palette` colour."""
    objects = [dict(o) for o in objects]
    if kind == "add":
        return with_added(objects, _absent(objects, rng, classes), rng, palette), "add"
    if kind == "drop" and len(objects) >= 2:
        objects.pop(rng.randrange(len(objects)))
        return caption(objects), "drop"
    i = rng.randrange(len(objects))
    names = {o["name"] for o in objects}
    if rng.random() < 0.5:
        objects[i]["name"] = rng.choice([c for c in classes if c not in names])
        if palette:
            objects[i]["color"] = palette[objects[i]["name"]]
    else:
        objects[i]["color"] = rng.choice([c for c in vocab.COLORS if c != objects[i]["color"]])
    return caption(objects), "swap"  # a swap keeps every cell, so the reading order holds


def preference_pairs(world: str | Path, n_pairs: int, seed: int,
                     mix: Sequence[float] = (0.5, 0.25, 0.25)) -> list[dict[str, Any]]:
    """`n_pairs` preference records (cycling over the train images in a seeded order): exact caption against a
    corrupted one, the kind drawn with probabilities `mix` over (add, drop, swap)."""
    sources = train_sources(world)
    info = _world_json(world)
    palette, classes = info.get("palette"), info["prior_order"]  # prior_order: the classes the world draws
    rng = random.Random(world_seed(seed, "quickstart-pairs"))
    order = list(range(len(sources)))
    rng.shuffle(order)
    rows = []
    for k in range(n_pairs):
        source = sources[order[k % len(order)]]
        kind = rng.choices(PAIR_KINDS, weights=mix)[0]
        rejected, applied = corrupt_caption(source["objects"], kind, rng, palette, classes)
        rows.append(_pair(f"{source['id']}-p{k}", source, source["caption"], rejected, {"kind": applied}))
    return rows


def _pair(row_id: str, source: dict[str, Any], chosen: str, rejected: str, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row_id,
        "images": source["images"],
        "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": PROMPT}]}],
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": chosen}]}],
        "rejected": [{"role": "assistant", "content": [{"type": "text", "text": rejected}]}],
        "method": "quickstart",
        "meta": json.dumps(meta, sort_keys=True),
    }


def chosen_sft_records(pairs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The control: the chosen side of every pair as an SFT conversation (same images and prompts)."""
    return [{"id": p["id"], "images": p["images"], "messages": [*p["prompt"], *p["chosen"]]} for p in pairs]


def onpolicy_prompts(world: str | Path) -> list[dict[str, Any]]:
    """The on-policy rounds' prompts, source rows the corrector can check (`objects`): a caption request for
    every train image and the world's yes/no existence questions about the train images (its SFT QA). Rounds on
    captions alone cost ShapesPOPE F1 (0.742 -> 0.664 after two rounds, seed 0); with the questions one round kept
    it (0.744)."""
    sources = {s["id"]: s for s in train_sources(world)}
    rows = [{"id": f"{s['id']}_describe", "images": s["images"], "objects": s["objects"], "question": PROMPT}
            for s in sources.values()]
    for record in read_jsonl(Path(world) / "sft.jsonl"):
        source = sources.get(record["id"].rsplit("_", 1)[0])
        question = record["messages"][0]["content"][-1]["text"]
        if source is not None and question.startswith("Is there"):
            rows.append({"id": record["id"], "images": source["images"], "objects": source["objects"],
                         "question": question})
    return rows
