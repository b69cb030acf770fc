"""Reward functions the PPO tests name by dotted path (the tests put this folder on sys.path)."""

from __future__ import annotations

import math

from align.data.messages import completion_text


def says_red(prompts, completions, **kw):
    return [1.0 if completion_text(c).strip().lower().startswith("red") else 0.0 for c in completions]


def raises(prompts, completions, **kw):
    raise KeyError("answer")


def one_short(prompts, completions, **kw):
    return [0.0] * (len(completions) - 1)


def not_a_number(prompts, completions, **kw):
    return [math.nan] * len(completions)


def length(prompts, completions, **kw):
    """Varies from sample to sample, so every update has something to follow."""
    return [len(completion_text(c)) / 10 for c in completions]
