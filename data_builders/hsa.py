"""HSA-DPO (Xiao et al., AAAI 2025): severity-aware pairs. A judge rates each sentence of the rejected (the
model's original) response for hallucination severity; the pair's `rejected_score`, which `--variant hsa`
multiplies into the rejected log-ratio, grows with it. The chosen side is the corrected response.

Source rows: `question` (or the `prompt` setting), `original` (rejected), `corrected` (chosen), `images`.
Severity: each sentence gets one of `severity_levels` (a label -> value mapping; default none 0, low 1, medium 2,
high 3) from `judge`: a callable `judge(sentence, source, question) -> label or number`, or a local VLM asked
which level fits, read by the likelihood of each label's first token. The score is
`score_offset + score_scale * aggregate(values of the hallucinated sentences)` (aggregate: max, mean or sum).
HSA-DPO does not publish its mapping from severity to weight; this is the documented stand-in, 1 + 0.5 x the
worst severity by default, so a weight of 1 is plain DPO. A response with no hallucinated sentence makes no pair
(counted); a judge that fails on a sentence drops the row (counted).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from align.errors import ConfigError
from data_builders.base import DESCRIBE, Builder, Built, Source, record_prompt
from data_builders.build_settings import BuildConfig
from data_builders.judges import JudgeFailed, choose, judge_callable, judge_each

AGGREGATES = ("max", "mean", "sum")
JUDGE_PROMPT = ("Question: {question}\nSentence from an answer about the image: \"{sentence}\"\nHow severe is the "
                "hallucination in this sentence, judged against the image? Answer with one word: {levels}.")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@dataclass
class HsaConfig(BuildConfig):
    judge: str | None = field(default=None, metadata={"help": "A local VLM, or pkg.mod:func (required)."})
    severity_levels: dict[str, float] = field(
        default_factory=lambda: {"none": 0.0, "low": 1.0, "medium": 2.0, "high": 3.0},
        metadata={"help": "Judge labels and their severity values; the first is 'no hallucination'."})
    aggregate: str = field(default="max", metadata={"help": "Severity of a response: max, mean or sum over its "
                                                            "hallucinated sentences."})
    score_offset: float = field(default=1.0, metadata={"help": "rejected_score = offset + scale x severity."})
    score_scale: float = field(default=0.5, metadata={"help": "rejected_score = offset + scale x severity."})
    prompt: str = field(default=DESCRIBE, metadata={"help": "User prompt for rows without a question."})

    def __post_init__(self):
        super().__post_init__()
        problems = []
        if self.aggregate not in AGGREGATES:
            problems.append(f"aggregate must be one of {', '.join(AGGREGATES)}, got '{self.aggregate}'")
        if not self.severity_levels or not all(isinstance(v, (int, float)) and math.isfinite(v) and v >= 0
                                               for v in self.severity_levels.values()):
            problems.append("severity_levels must map labels to finite numbers >= 0")
        if not (math.isfinite(self.score_offset) and self.score_offset > 0):
            problems.append(f"score_offset must be a finite number > 0, got {self.score_offset}")
        if not (math.isfinite(self.score_scale) and self.score_scale >= 0):
            problems.append(f"score_scale must be a finite number >= 0, got {self.score_scale}")
        if problems:
            raise ConfigError(problems)


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]


def severity_score(values: list[float], aggregate: str, offset: float, scale: float) -> float:
    """`offset + scale * aggregate(values)` over the hallucinated sentences' severity values (> 0)."""
    hallucinated = [v for v in values if v > 0]
    total = {"max": max, "sum": sum, "mean": lambda v: sum(v) / len(v)}[aggregate](hallucinated)
    return offset + scale * total


class HsaBuilder(Builder):
    name = "hsa"
    config_cls = HsaConfig
    required = ("original", "corrected")

    def __init__(self, config: HsaConfig):
        super().__init__(config)
        self.judge_fn = judge_callable(config.judge, "judge", "hsa rates severity", "a local VLM")

    def _value(self, answer) -> float:
        levels = self.config.severity_levels
        if isinstance(answer, str) and answer.strip().lower() in {k.lower() for k in levels}:
            return float(next(v for k, v in levels.items() if k.lower() == answer.strip().lower()))
        if isinstance(answer, (int, float)) and not isinstance(answer, bool) and math.isfinite(answer) and answer >= 0:
            return float(answer)
        raise JudgeFailed(f"an answer outside {', '.join(levels)}: {answer!r:.40}")

    def _judge(self, items: list[tuple[Source, str, str]]) -> list[float | None]:
        """Severity value per (source, question, sentence); None where the judge failed."""
        if self.judge_fn is not None:
            return judge_each(self.judge_fn, [(s, src.record, q) for src, q, s in items], self._value)
        levels = list(self.config.severity_levels)
        conversations = [record_prompt(src.record, JUDGE_PROMPT.format(question=q, sentence=s, levels=", ".join(levels)))
                         for src, q, s in items]
        images = [src.load_images() for src, _, _ in items]
        try:
            return [self._value(label) for label in choose(self.local_model(self.config.judge), conversations, images, levels)]
        except JudgeFailed:
            return [None] * len(items)

    def build(self, sources, chunk_seed: int) -> list[Built]:
        c = self.config
        sources = list(sources)
        items, owner = [], []
        for k, source in enumerate(sources):
            question = source.record.get("question") or c.prompt
            for sentence in sentences(source.record["original"]):
                items.append((source, question, sentence))
                owner.append(k)
        values = self._judge(items)
        per_source: dict[int, list[float | None]] = {}
        for k, value in zip(owner, values, strict=True):
            per_source.setdefault(k, []).append(value)
        built = []
        for k, source in enumerate(sources):
            record = source.record
            found = per_source.get(k, [])
            if any(v is None for v in found):
                built.append(Built(skipped="judge failed"))
                continue
            if not any(v > 0 for v in found):
                built.append(Built(skipped="judge found no hallucination"))
                continue
            score = severity_score(found, c.aggregate, c.score_offset, c.score_scale)
            prompt = record_prompt(record, record.get("question") or c.prompt)
            built.append(Built(pairs=[self.pair(
                source, prompt, record["corrected"], record["original"], "hsa",
                {"severities": found, "aggregate": c.aggregate}, rejected_score=score)]))
        return built
