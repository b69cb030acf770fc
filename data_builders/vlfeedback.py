"""VLFeedback / Silkie (Li et al., 2023): multi-aspect ratings of several responses to one instruction ->
preference pairs.

Source rows: `question` (or the `prompt` setting), `images`, `responses` (the candidates) and `ratings`, one per
response: a number, or {aspect: rating}, where a rating is a number, a numeric string, or {"Rating": ...} as in
the released data (GPT-4V's helpfulness, ethical considerations and visual faithfulness, 1-5). As in Silkie's
`make_vlfeedback_paired_dataset`: every unordered pair of responses, each scored by its mean rating over the
aspects (equally weighted), the strictly higher one chosen and ties dropped, no margin. A row where some
response lacks a rating for an aspect, or has a non-numeric one, is skipped and counted, never scored 0. The
means are kept as `chosen_score` / `rejected_score`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from data_builders.base import DESCRIBE, Builder, Built, Source, record_prompt
from data_builders.build_settings import BuildConfig


@dataclass
class VlfeedbackConfig(BuildConfig):
    aspects: list[str] = field(
        default_factory=list,
        metadata={"help": "Aspects averaged into a response's score (default: every aspect the row's ratings "
                          "name; VLFeedback: Helpfulness, Ethical Considerations, Visual Faithfulness)."})
    prompt: str = field(default=DESCRIBE, metadata={"help": "User prompt for rows without a question."})


class Unusable(Exception):
    """A row whose ratings cannot score every response (named reason, counted in the summary)."""


def rating_value(value: Any) -> float:
    """A rating as a float: a number, a numeric string, or {"Rating": ...}; otherwise Unusable."""
    if isinstance(value, Mapping):
        value = value.get("Rating", value.get("rating"))
    if isinstance(value, bool):
        raise Unusable("a non-numeric rating")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise Unusable("a non-numeric rating") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise Unusable("a non-numeric rating")
    return float(value)


def mean_ratings(ratings: list, aspects: list[str]) -> list[float]:
    """Each response's mean rating over `aspects` (all the row names when empty); Unusable when a response lacks
    one of them or a rating is not a number."""
    if all(not isinstance(r, Mapping) or "Rating" in r or "rating" in r for r in ratings):
        return [rating_value(r) for r in ratings]  # one overall rating per response
    named = aspects or sorted({a for r in ratings if isinstance(r, Mapping) for a in r})
    means = []
    for r in ratings:
        if not isinstance(r, Mapping) or any(a not in r or r[a] is None for a in named):
            raise Unusable("ratings missing an aspect")
        means.append(sum(rating_value(r[a]) for a in named) / len(named))
    return means


class VlfeedbackBuilder(Builder):
    name = "vlfeedback"
    config_cls = VlfeedbackConfig
    required = ("responses", "ratings")

    def build_one(self, source: Source) -> Built:
        record = source.record
        responses, ratings = record["responses"], record["ratings"]
        if isinstance(ratings, Mapping) or len(ratings) != len(responses):
            return Built(skipped="ratings do not match the responses one to one")
        try:
            means = mean_ratings(list(ratings), list(self.config.aspects))
        except Unusable as exc:
            return Built(skipped=str(exc))
        prompt = record_prompt(record, record.get("question") or self.config.prompt)
        pairs = []
        for i, j in combinations(range(len(responses)), 2):
            if means[i] == means[j] or responses[i].strip() == responses[j].strip():
                continue  # a tie says nothing about which is better
            hi, lo = (i, j) if means[i] > means[j] else (j, i)
            pairs.append(self.pair(source, prompt, responses[hi], responses[lo], f"vlf-{hi}-{lo}",
                                   {"chosen": hi, "rejected": lo},
                                   chosen_score=means[hi], rejected_score=means[lo]))
        return Built(pairs=pairs) if pairs else Built(skipped="every pair tied")
