"""Rewards for `align ppo`: user callables (TRL's reward-function signature), LLaVA-RLHF's symbolic correctness
bonus, the shapes world's colour reward, and the checks that stop a bad reward before it trains anything.

A reward function is called as `f(prompts=[...], completions=[...], **columns)` with one entry per rollout:
`prompts[i]` the prompt messages, `completions[i]` TRL's conversational form `[{"role": "assistant", "content":
text}]`, and every extra column of the prompt rows (`reference`, `answer`, ...) as a list. It returns one number
per completion.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from align.errors import ConfigError, RewardError


def load_reward_funcs(paths: Sequence[str]) -> list[tuple[str, Callable]]:
    """(name, callable) for each dotted path; an unimportable or non-callable path is a ConfigError."""
    from align.registry import import_object

    funcs = []
    for path in paths:
        try:
            func = import_object(path)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigError(f"reward_funcs: cannot import '{path}' ({type(exc).__name__}: {exc})") from None
        if not callable(func):
            raise ConfigError(f"reward_funcs: '{path}' is a {type(func).__name__}, not a callable")
        funcs.append((path, func))
    return funcs


def call_reward_func(name: str, func: Callable, prompts: list, completions: list[str],
                     columns: dict[str, list], batch: int) -> list[float]:
    """The function's rewards for one rollout batch, checked: it must return one finite number per completion."""
    conversational = [[{"role": "assistant", "content": text}] for text in completions]
    try:
        out = func(prompts=prompts, completions=conversational, **columns)
    except Exception as exc:  # noqa: BLE001 - any failure of user code is reported, named, and stops the run
        raise RewardError(f"reward function '{name}' raised {type(exc).__name__}: {exc} (rollout batch {batch})") \
            from exc
    try:
        values = [float(v) for v in out]
    except (TypeError, ValueError):
        raise RewardError(f"reward function '{name}' must return a list of numbers, got {type(out).__name__} "
                          f"(rollout batch {batch})") from None
    if len(values) != len(completions):
        raise RewardError(f"reward function '{name}' returned {len(values)} rewards for {len(completions)} "
                          f"completions (rollout batch {batch}); return one per completion")
    check_finite(name, values, batch)
    return values


def check_finite(name: str, values: Sequence[float], batch: int) -> None:
    bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
    if bad:
        raise RewardError(f"{name} gave {values[bad[0]]} for completion {bad[0]} of rollout batch {batch} "
                          f"({len(bad)} non-finite of {len(values)}); rewards must be finite numbers")


def completion_text(completion: Any) -> str:
    """A completion as TRL passes it (string or [{"role": "assistant", "content": ...}]) -> its text."""
    if isinstance(completion, str):
        return completion
    content = completion[-1]["content"]
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") for part in content if part.get("type") == "text")


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


# --------------------------------------------------------------------------------- shapes world rewards

_WORD = re.compile(r"[a-z]+")


def shapes_color(prompts: list, completions: list, reference: list[str] | None = None, **_: Any) -> list[float]:
    """+1 when the answer's first colour word is the asked shape's true colour (`reference`, the shapes world's
    exact answer, e.g. "Red"), else 0: naming every colour does not pay."""
    from align.data.shapes_vocab import COLORS

    if reference is None:
        raise ValueError("shapes_color needs the rows' true answers in a 'reference' column (SFT colour QA rows)")
    rewards = []
    for completion, truth in zip(completions, reference, strict=True):
        words = _WORD.findall(completion_text(completion).lower())
        named = next((w for w in words if w in COLORS), None)
        rewards.append(1.0 if named is not None and named == str(truth).strip().lower() else 0.0)
    return rewards
