"""The shapes world's RL tasks: prompt rows whose answers a rule checks (`align.data.shapes_rewards`), for
`align grpo` and `align ppo --reward-func`.

One row per image and task, as prompt records (`id`, `images`, `prompt`) plus the columns the task's reward reads:

| file | question | columns | reward |
|---|---|---|---|
| `rl_count.jsonl` | How many circles are there in the image? (every fourth image asks for an absent class: 0) | `answer` (int) | `count` |
| `rl_color.jsonl` | What color is the heart? (a class the image holds once; images without one are skipped) | `answer` | `color` |
| `rl_grounding.jsonl` | Where is the red circle? Give its bounding box. (a colour and class the image holds once) | `box` [x0, y0, x1, y1] pixels, `image_size` [w, h] | `grounding_iou` |
| `rl_caption.jsonl` | Describe this image in detail. | `objects` (the image's objects: name, color, size, cell, ...) | `align.eval.shapes_chair:claim_reward` |

Every row also has `task`. Rows come from the train images (`rl_<task>.jsonl`) and the eval images
(`rl_<task>_eval.jsonl`, for held-out reward). Questions are drawn from the world's seed, per task and image, so
adding a task never changes another's rows.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from align.data import shapes_vocab as vocab
from align.seeds import derive_seed

GROUNDING_PROMPT = "Where is the {color} {name}? Give its bounding box."
COLOR_PROMPT = "What color is the {name}?"
COUNT_PROMPT = "How many {plural} are there in the image?"
CAPTION_PROMPT = "Describe this image in detail."  # the world's chair_questions.jsonl asks the same
ABSENT_EVERY = 4  # every fourth count question asks for a class the image does not hold


def _row(source: Mapping[str, Any], task: str, text: str, **columns: Any) -> dict[str, Any]:
    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]
    return {"id": f"{source['id']}_{task}", "images": list(source["images"]), "prompt": prompt, "task": task,
            **columns}


def count_row(source: Mapping[str, Any], index: int, rng: random.Random) -> dict[str, Any] | None:
    counts = Counter(o["name"] for o in source["objects"])
    absent = [c for c in vocab.CLASSES if c not in counts]
    if index % ABSENT_EVERY == ABSENT_EVERY - 1 and absent:
        name = rng.choice(absent)
    elif counts:
        name = rng.choice(sorted(counts, key=vocab.CLASSES.index))
    else:
        return None
    return _row(source, "count", COUNT_PROMPT.format(plural=vocab.PLURALS[name]), answer=counts.get(name, 0))


def color_row(source: Mapping[str, Any], index: int, rng: random.Random) -> dict[str, Any] | None:
    counts = Counter(o["name"] for o in source["objects"])
    once = [o for o in source["objects"] if counts[o["name"]] == 1]
    if not once:
        return None
    obj = rng.choice(once)
    return _row(source, "color", COLOR_PROMPT.format(name=obj["name"]), answer=obj["color"])


def grounding_row(source: Mapping[str, Any], index: int, rng: random.Random) -> dict[str, Any] | None:
    counts = Counter((o["color"], o["name"]) for o in source["objects"])
    once = [o for o in source["objects"] if counts[(o["color"], o["name"])] == 1]
    if not once:
        return None
    obj = rng.choice(once)
    return _row(source, "grounding", GROUNDING_PROMPT.format(color=obj["color"], name=obj["name"]),
                box=[int(c) for c in obj["bbox"]], image_size=[int(s) for s in source["size"]])


def caption_row(source: Mapping[str, Any], index: int, rng: random.Random) -> dict[str, Any]:
    return _row(source, "caption", CAPTION_PROMPT, objects=[dict(o) for o in source["objects"]])


TASKS: dict[str, Callable[[Mapping[str, Any], int, random.Random], dict[str, Any] | None]] = {
    "count": count_row,
    "color": color_row,
    "grounding": grounding_row,
    "caption": caption_row,
}


def rl_task_rows(sources: Sequence[Mapping[str, Any]], seed: int) -> dict[str, list[dict[str, Any]]]:
    """file stem (rl_count, rl_count_eval, ...) -> its rows, in source order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for task, make in TASKS.items():
        for split, stem in (("train", f"rl_{task}"), ("eval", f"rl_{task}_eval")):
            rows = []
            for index, source in enumerate(s for s in sources if s["split"] == split):
                row = make(source, index, random.Random(derive_seed(seed, "rl", task, source["id"], bits=32)))
                if row is not None:
                    rows.append(row)
            out[stem] = rows
    return out
