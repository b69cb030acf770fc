"""Reward functions of the RL trainers (`align ppo`, `align grpo`): loading them by dotted path, calling them with
TRL's reward-function signature, and checking what they return before anything trains on it.

A reward function is called as `f(prompts=[...], completions=[...], **columns)` with one entry per completion:
`prompts[i]` the prompt messages, `completions[i]` TRL's conversational form `[{"role": "assistant", "content":
text}]`, and every extra column of the prompt rows (`reference`, `answer`, ...) as a list. It returns one number
per completion. A function that raises, returns the wrong number of values or a non-finite one stops the run with
one line that names it.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

from align.errors import ConfigError, DataError, RewardError

# Arguments the trainers pass themselves; any other named parameter of a reward function is a prompt-row column.
CALL_ARGUMENTS = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric")


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
                     columns: dict[str, list], batch: int, **extra: Any) -> list[float]:
    """The function's rewards for one rollout batch, checked: it must return one finite number per completion.
    `extra` (TRL's completion_ids, trainer_state, log_extra, log_metric) reaches the function beside the columns."""
    conversational = [[{"role": "assistant", "content": text}] for text in completions]
    try:
        out = func(prompts=prompts, completions=conversational, **columns, **extra)
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


def columns_read(func: Callable) -> list[str]:
    """The prompt-row columns `func` needs on every row: its `reads` attribute where it declares one (align's
    built-in rewards do), else its named parameters without a default, besides the ones the trainers pass."""
    declared = getattr(func, "reads", None)
    if declared is not None:
        return list(declared)
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in CALL_ARGUMENTS
            and p.default is inspect.Parameter.empty]


def check_reward_columns(funcs: Sequence[tuple[str, Callable]], records: Sequence[dict], origins: Sequence) -> None:
    """Before anything trains: every column a reward function reads is set on every prompt row; the first row
    without one is a DataError naming its file, row, column and the function that reads it."""
    for name, func in funcs:
        for column in columns_read(func):
            for record, (path, row) in zip(records, origins, strict=True):
                if record.get(column) is None:
                    raise DataError(path, f"reward function '{name}' reads the column '{column}', which this row "
                                    "does not set", row=row, field=column)


def reward_model_scores(reward_model, encoder, prompts, rows: Sequence[int], examples: Sequence, texts: Sequence[str],
                        reward_prompt: str | None, fact_captions, seed: int, batch_size: int, device):
    """[B] scores of a reward model from `align reward` for each (prompt row, response text), in its reward prompt
    (with the row's fact captions when it was trained with them), `batch_size` conversations at a time."""
    import torch

    from align.data.collate import Example
    from align.data.reward_prompts import reward_messages
    from align.models.scalar_head import last_token_scores

    scored = []
    for row, example, text in zip(rows, examples, texts, strict=True):
        response = [{"role": "assistant", "content": [{"type": "text", "text": text}]}]
        messages = reward_messages(example.messages, response, reward_prompt, prompts.records[row], fact_captions,
                                   seed + row, prompts.origins[row])
        scored.append(Example(messages, example.images, example.videos))
    out = []
    for start in range(0, len(scored), batch_size):
        batch = dict(encoder.encode(scored[start:start + batch_size], add_generation_prompt=reward_prompt is not None))
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        out.append(last_token_scores(reward_model(**batch), batch["attention_mask"]).float())
    return torch.cat(out)


def load_reward_model(path: str, family: str, fact_captions, dtype: str):
    """A reward model from `align reward` that can score `family`'s conversations; refused in one line when it is
    another kind of model, another family, or was trained with fact captions the run does not pass."""
    from align.errors import ModelError
    from align.models.scalar_head import load_scalar_head_model, read_head_info

    info = read_head_info(path)
    if info.get("kind") != "reward":
        raise ModelError(f"{path}: a {info.get('kind')} model, not a reward model")
    if info.get("family") != family:
        raise ModelError(f"{path}: a {info.get('family')} reward model cannot score a {family} policy's "
                         "conversations (its processor differs)")
    if info.get("fact_captions") and fact_captions is None:
        raise ConfigError(f"the reward model {path} was trained with fact captions in its reward prompt; pass the "
                          "same file as fact_captions")
    return load_scalar_head_model(path, dtype=dtype)[0]
