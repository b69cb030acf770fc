"""LLaVA-Hound-DPO (Zhang et al., NAACL 2025): video preference pairs from a language-model reward that reads a
detailed caption of the video in place of the video itself.

Source rows: `question` (or the `prompt` setting), `caption` (the detailed video caption the judge treats as
ground truth), `images` holding the video (a list of frames), and `responses`, or none: then `samples` responses
are drawn from `--model` (a video family: llava_next_video, qwen2_vl, ...). A judge scores each response 1-5
against the caption (relevance, accuracy, clarity, completeness): a callable `judge(response, caption, question)
-> number`, or a local chat LM (a VLM works too) read by the likelihood of each score's first token. The highest
scored response is chosen and the lowest rejected (a tie makes no pair); the scores are kept. A judge that fails
on a response drops it (counted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from align.errors import ConfigError
from data_builders.base import Builder, Built, record_prompt
from data_builders.build_settings import BuildConfig
from data_builders.judges import JudgeFailed, choose, judge_callable, judge_each

SCORES = ("1", "2", "3", "4", "5")
JUDGE_FAILED = "judge failed (response dropped)"
JUDGE_PROMPT = ("You are given a detailed caption of a video, which is the ground truth, and a question about the "
                "video with an answer. Rate the answer against the caption for relevance, accuracy, clarity and "
                "completeness on a scale of 1 (worst) to 5 (best). Reply with the number only.\n\n"
                "Ground truth video caption: {caption}\nQuestion: {question}\nAnswer: {response}")


@dataclass
class HoundConfig(BuildConfig):
    samples: int = field(default=4, metadata={"help": "Responses sampled per prompt when a row has none."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature of the responses."})
    judge: str | None = field(default=None, metadata={"help": "A local chat LM or VLM, or pkg.mod:func (required)."})
    prompt: str = field(default="Describe what happens in the video.",
                        metadata={"help": "User prompt for rows without a question."})

    def __post_init__(self):
        super().__post_init__()
        if self.samples < 2:
            raise ConfigError(f"samples must be >= 2 (a pair needs two responses), got {self.samples}")


class HoundBuilder(Builder):
    name = "hound"
    config_cls = HoundConfig
    on_policy = True
    required = ("caption",)

    def __init__(self, config: HoundConfig):
        super().__init__(config)
        self.judge_fn = judge_callable(config.judge, "judge", "hound scores responses", "a local chat LM")

    def prepare(self, records, input_info=None) -> None:
        self.require_model_or_responses(records)

    def _scores(self, items: list[tuple[str, str, str]]) -> list[float | None]:
        """Score per (response, caption, question); None where the judge failed."""
        if self.judge_fn is not None:
            return judge_each(self.judge_fn, items, read_score)
        conversations = [[{"role": "user", "content": [{"type": "text", "text": JUDGE_PROMPT.format(
            caption=caption, question=question, response=response)}]}] for response, caption, question in items]
        try:
            return [float(s) for s in choose(self.local_model(self.config.judge), conversations, [[] for _ in items], SCORES)]
        except JudgeFailed:
            return [None] * len(items)

    def build(self, sources, chunk_seed: int) -> list[Built]:
        c = self.config
        sources = list(sources)
        responses = self.responses(sources, chunk_seed, c.samples, c.prompt)
        items, owner = [], []
        for k, (source, texts) in enumerate(zip(sources, responses, strict=True)):
            question = source.record.get("question") or c.prompt
            for r, text in enumerate(texts):
                items.append((text, source.record["caption"], question))
                owner.append((k, r))
        scores = dict(zip(owner, self._scores(items), strict=True))
        built = []
        for k, (source, texts) in enumerate(zip(sources, responses, strict=True)):
            scored = [(scores[(k, r)], r) for r in range(len(texts)) if scores[(k, r)] is not None]
            counts = {JUDGE_FAILED: len(texts) - len(scored)}
            if len(scored) < 2 or max(scored)[0] == min(scored)[0]:
                built.append(Built(skipped="no two responses differ in score", counts=counts))
                continue
            (hi_score, hi), (lo_score, lo) = max(scored), min(scored)
            prompt = record_prompt(source.record, source.record.get("question") or c.prompt)
            built.append(Built(pairs=[self.pair(source, prompt, texts[hi], texts[lo], f"hound-{hi}-{lo}",
                                                {"chosen": hi, "rejected": lo, "responses": len(texts)},
                                                chosen_score=hi_score, rejected_score=lo_score)], counts=counts))
        return built


def read_score(value) -> float:
    """A judge's score: a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"a score that is not a finite number: {value!r:.40}")
    return float(value)
