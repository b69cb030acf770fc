"""Reward prompts: the turn appended after a response before its reward is read (LLaVA-RLHF), and Fact-RLHF's
ground-truth captions inside it.

A reward model reads its score at the last token of (image, conversation, response, reward prompt). The reward
prompt is one more user turn asking the model to judge its last response; the score is read at the start of the
model's answer (the generation prompt). Without a reward prompt the score is read at the response's end-of-turn
token. Fact-RLHF fills `{factual_prompt}` with the image's captions, shuffled per row, in training and scoring.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from align.errors import DataError

PRESETS: dict[str, str] = {
    "llava_rlhf": (
        "Rate your last response. A good response is accurate (it only states what the image shows), helpful "
        "(it answers what was asked), natural and concise. What is the quality score of your last response?"
    ),
    "fact_rlhf": (
        "Rate your last response. A good response is accurate (it only states what the image shows), helpful "
        "(it answers what was asked), natural and concise.{factual_prompt} What is the quality score of your last "
        "response?"
    ),
}
FACT_SLOT = "{factual_prompt}"
FACT_HEADER = "\nThe response must be supported by these descriptions of the image:\n"


def resolve_reward_prompt(value: str | None) -> str | None:
    """A preset name (llava_rlhf, fact_rlhf) or the prompt text itself; None or "none": no reward prompt."""
    if value in (None, "", "none"):
        return None
    return PRESETS.get(value, value)


def factual_prompt(captions: Sequence[str], seed: int) -> str:
    """Fact-RLHF's slot text: the captions as a bulleted list, shuffled with `seed`."""
    shuffled = list(captions)
    random.Random(seed).shuffle(shuffled)
    return FACT_HEADER + "".join(f"  - {c}\n" for c in shuffled)


def read_fact_captions(path: str | Path) -> dict[str, list[str]]:
    """{image key: [captions]} from a JSON object (LLaVA-RLHF's image_to_caption.json layout)."""
    from align.files import read_json

    path = Path(path)
    if not path.is_file():
        raise DataError(path, "no such file")
    data = read_json(path)
    if not isinstance(data, dict):
        raise DataError(path, "expected a JSON object mapping an image name to a list of captions")
    for key, value in data.items():
        if not (isinstance(value, list) and all(isinstance(c, str) for c in value)):
            raise DataError(path, f"entry {key!r} is not a list of caption strings")
    return data


def captions_for(record: dict[str, Any], captions: dict[str, list[str]]) -> list[str] | None:
    """A row's captions: looked up by its first image's path, that path's file name, then the row id."""
    keys = []
    images = record.get("images") or []
    if images and isinstance(images[0], str):
        keys += [images[0], Path(images[0]).name]
    keys.append(str(record.get("id")))
    for key in keys:
        if key in captions:
            return captions[key]
    return None


def reward_turn(prompt: str, record: dict[str, Any], captions: dict[str, list[str]] | None, seed: int,
                where: tuple[Any, int]) -> dict:
    """The user turn appended after the response. With `captions`, the row's captions fill `{factual_prompt}`
    (or follow the prompt when it has no slot); without, the slot is dropped."""
    text = prompt
    if captions is None:
        text = text.replace(FACT_SLOT, "")
    else:
        found = captions_for(record, captions)
        if found is None:
            raise DataError(where[0], "no fact captions for this row's image (looked up by image path, file name "
                            "and row id)", row=where[1], field="images")
        fact = factual_prompt(found, seed)
        text = text.replace(FACT_SLOT, fact) if FACT_SLOT in text else text + fact
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def reward_messages(prompt: list[dict], completion: list[dict], reward_prompt: str | None, record: dict[str, Any],
                    captions: dict[str, list[str]] | None, seed: int, where: tuple[Any, int]) -> list[dict]:
    """What a reward model reads, in training and when it scores PPO rollouts alike: the prompt, the response and,
    with a reward prompt, the turn asking for the score (`reward_turn`)."""
    messages = [*prompt, *completion]
    if reward_prompt is not None:
        messages.append(reward_turn(reward_prompt, record, captions, seed, where))
    return messages
