"""Valid ranges of numeric settings, checked when a config is built: a value out of range is one line naming the
key and the range, never a crash later (a zero batch size) or a silently wrong run (a negative beta, a NaN).

    problems = range_problems(config, TRAINING_RANGES)   # ["beta must be > 0, got -1.0", ...]

Every float setting must also be finite, whether or not it has a range.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Range:
    """low/high bounds (None: unbounded), open or closed; `also`: values allowed outside them (max_steps -1)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    also: tuple[float, ...] = ()

    def contains(self, value: float) -> bool:
        if value in self.also:
            return True
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.high_open else value > self.high))

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            text = f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        elif self.low is not None:
            text = f"{'>' if self.low_open else '>='} {self.low:g}"
        else:
            text = f"{'<' if self.high_open else '<='} {self.high:g}"
        return " or ".join([f"{v:g}" for v in self.also] + [text])


POSITIVE = Range(0, low_open=True)
NON_NEGATIVE = Range(0)
AT_LEAST_ONE = Range(1)
FRACTION = Range(0, 1)

# Settings of the trainer configs (transformers' TrainingArguments, TRL's and align's own), by field name.
TRAINING_RANGES: dict[str, Range] = {
    "learning_rate": POSITIVE,
    "per_device_train_batch_size": AT_LEAST_ONE,
    "per_device_eval_batch_size": AT_LEAST_ONE,
    "gradient_accumulation_steps": AT_LEAST_ONE,
    "num_train_epochs": POSITIVE,
    "max_steps": Range(1, also=(-1,)),
    "warmup_steps": NON_NEGATIVE,
    "warmup_ratio": FRACTION,
    "weight_decay": NON_NEGATIVE,
    "max_grad_norm": NON_NEGATIVE,
    "adam_beta1": Range(0, 1, high_open=True),
    "adam_beta2": Range(0, 1, high_open=True),
    "adam_epsilon": POSITIVE,
    "logging_steps": POSITIVE,
    "save_steps": POSITIVE,
    "eval_steps": POSITIVE,
    "save_total_limit": AT_LEAST_ONE,
    "seed": NON_NEGATIVE,
    "data_seed": NON_NEGATIVE,
    "dataloader_num_workers": NON_NEGATIVE,
    "max_length": AT_LEAST_ONE,
    "max_prompt_length": AT_LEAST_ONE,
    "max_new_tokens": AT_LEAST_ONE,
    "precompute_ref_batch_size": AT_LEAST_ONE,
    "lora_r": AT_LEAST_ONE,
    "lora_alpha": POSITIVE,
    "lora_dropout": Range(0, 1, high_open=True),
    "adapter_len": AT_LEAST_ONE,
    "adapter_layers": AT_LEAST_ONE,
    # DPO (each variant declares its own settings' ranges in their field metadata)
    "beta": POSITIVE,
    "label_smoothing": Range(0, 0.5, high_open=True),
    "rpo_alpha": NON_NEGATIVE,
    # reward model and PPO
    "center_coef": NON_NEGATIVE,
    "rollout_batch_size": AT_LEAST_ONE,
    "ppo_epochs": AT_LEAST_ONE,
    "temperature": POSITIVE,
    "top_p": Range(0, 1, low_open=True),
    "kl_coef": NON_NEGATIVE,
    "clip_range": NON_NEGATIVE,
    "clip_range_value": NON_NEGATIVE,
    "vf_coef": NON_NEGATIVE,
    "gamma": FRACTION,
    "lam": FRACTION,
    "reward_scale": NON_NEGATIVE,
    "length_budget": AT_LEAST_ONE,
}

# GRPO (TRL's GRPOConfig): beta 0 turns the KL term off, its default.
GRPO_RANGES: dict[str, Range] = {
    **TRAINING_RANGES,
    "beta": NON_NEGATIVE,
    "num_iterations": AT_LEAST_ONE,
    "max_completion_length": AT_LEAST_ONE,
    "epsilon": POSITIVE,
    "epsilon_high": POSITIVE,
    "top_k": NON_NEGATIVE,
    "repetition_penalty": POSITIVE,
    "top_entropy_quantile": Range(0, 1, low_open=True),
    "reward_model_weight": Range(),
}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def range_problems(config: Any, ranges: Mapping[str, Range]) -> list[str]:
    """Every out-of-range or non-finite numeric setting of `config` (a dataclass instance or a mapping); a
    dataclass field's own range (`metadata={"range": Range(...)}`) wins over `ranges`."""
    if dataclasses.is_dataclass(config):
        fields = [f for f in dataclasses.fields(config) if f.init]
        values = {f.name: getattr(config, f.name) for f in fields}
        ranges = {**ranges, **{f.name: f.metadata["range"] for f in fields if "range" in f.metadata}}
    else:
        values = dict(config)
    problems = []
    for name, value in values.items():
        if not _number(value):
            continue
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{name} must be a finite number, got {value}")
        elif name in ranges and not ranges[name].contains(value):
            problems.append(f"{name} must be {ranges[name].describe()}, got {value!r}")
    return problems
