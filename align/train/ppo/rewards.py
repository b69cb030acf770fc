"""PPO's own reward terms: LLaVA-RLHF's symbolic correctness bonus, and the shapes world's colour reward under the
name PPO's recipe uses (loading and calling reward functions is shared: align.train.rewards).
"""

from __future__ import annotations

from typing import Any

# ------------------------------------------------------------------- LLaVA-RLHF's symbolic correctness bonus

# LLaVA-RLHF's AnswerType: GENERAL=1, A..D_IN_ABCD=2..5, NO_IN_YESNO=6, YES_IN_YESNO=7 (names accepted too).
ANSWER_TYPES = {"GENERAL": 1, "A_IN_ABCD": 2, "B_IN_ABCD": 3, "C_IN_ABCD": 4, "D_IN_ABCD": 5, "NO_IN_YESNO": 6,
                "YES_IN_YESNO": 7}


def answer_type(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        if value.upper() in ANSWER_TYPES:
            return ANSWER_TYPES[value.upper()]
        if value.strip().isdigit():
            return int(value)
        raise ValueError(f"unknown caption_type {value!r}; known: {', '.join(ANSWER_TYPES)} or 1-7")
    return int(value)


def correctness_bonus(text: str, caption_type: Any) -> float:
    """LLaVA-RLHF's bonus: multiple choice 1 when the response starts with the right letter ("B.") or says
    "correct option is B."; yes/no with truth No: +0.5 for an answer starting No, -0.5 for Yes; truth Yes and
    general prompts: 0 (LLaVA-RLHF leaves Yes unrewarded on purpose: models over-answer yes)."""
    kind = answer_type(caption_type)
    answer = text.strip()
    if kind in (2, 3, 4, 5):
        letter = "ABCD"[kind - 2]
        return 1.0 if answer.startswith(f"{letter}.") or f"correct option is {letter}." in answer else 0.0
    if kind == 6:
        lowered = answer.lower()
        return 0.5 if lowered.startswith("no") else -0.5 if lowered.startswith("yes") else 0.0
    return 0.0


def shapes_color(prompts: list, completions: list, reference: list[str] | None = None, **_: Any) -> list[float]:
    """align.data.shapes_rewards.color on the `reference` column (SFT colour QA rows' answers, e.g. "Red"): +1 when
    the answer's first colour word is the asked shape's true colour, else 0; naming every colour does not pay."""
    from align.data.shapes_rewards import color

    if reference is None:
        raise ValueError("shapes_color needs the rows' true answers in a 'reference' column (SFT colour QA rows)")
    return color(prompts, completions, answer=reference)


shapes_color.reads = ("reference",)
