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
from data_builders.base import Builder, Built, Source, user_prompt
from data_builders.build_settings import BuildConfig
from data_builders.judges import JudgeFailed, choose, is_callable_spec, load_callable

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
    required = ("caption",)

    def __init__(self, config: HoundConfig):
        super().__init__(config)
        if not config.judge:
            raise ConfigError("hound scores responses with a judge: pass judge=MODEL (a local chat LM) or "
                              "judge=pkg.mod:func")
        self.judge_fn = load_callable(config.judge, "judge") if is_callable_spec(config.judge) else None
        self._judge_model = None

    def prepare(self, records, input_info=None) -> None:
        if not self.config.model and not all(isinstance(r.get("responses"), list) and len(r["responses"]) >= 2
                                              for r in records):
            raise ConfigError("hound samples responses from --model MODEL; without one, every row needs at least "
                              "two `responses`")

    def _responses(self, sources: list[Source], chunk_seed: int) -> list[list[str]]:
        c = self.config
        out = [list(s.record["responses"]) if isinstance(s.record.get("responses"), list) else [] for s in sources]
        missing = [i for i, s in enumerate(sources) if not out[i]]
        if missing:
            conversations, media = [], []
            for i in missing:
                record = sources[i].record
                videos = sum(isinstance(m, list) for m in record.get("images") or [])
                still = len(record.get("images") or []) - videos
                conversations += [user_prompt_with_video(record.get("question") or c.prompt, still, videos)] * c.samples
                media += [sources[i].load_images()] * c.samples
            texts = self.generator.generate(conversations, media, seed=chunk_seed, max_new_tokens=c.max_new_tokens,
                                            temperature=c.temperature, top_p=c.top_p)
            for n, i in enumerate(missing):
                out[i] = texts[n * c.samples:(n + 1) * c.samples]
        return out

    def _scores(self, items: list[tuple[str, str, str]]) -> list[float | None]:
        """Score per (response, caption, question); None where the judge failed."""
        if self.judge_fn is not None:
            out: list[float | None] = []
            for response, caption, question in items:
                try:
                    value = self.judge_fn(response, caption, question)
                except Exception:  # the judge's own failure: counted by the caller
                    out.append(None)
                    continue
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
                out.append(float(value) if ok else None)
            return out
        from align.models.generate import Generator

        if self._judge_model is None:
            c = self.config
            self._judge_model = Generator(c.judge, dtype=c.dtype, batch_size=c.batch_size)
        conversations = [[{"role": "user", "content": [{"type": "text", "text": JUDGE_PROMPT.format(
            caption=caption, question=question, response=response)}]}] for response, caption, question in items]
        try:
            return [float(s) for s in choose(self._judge_model, conversations, [[] for _ in items], SCORES)]
        except JudgeFailed:
            return [None] * len(items)

    def build(self, sources, chunk_seed: int) -> list[Built]:
        c = self.config
        sources = list(sources)
        responses = self._responses(sources, chunk_seed)
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
            record = source.record
            videos = sum(isinstance(m, list) for m in record.get("images") or [])
            prompt = user_prompt_with_video(record.get("question") or c.prompt,
                                            len(record.get("images") or []) - videos, videos)
            built.append(Built(pairs=[self.pair(source, prompt, texts[hi], texts[lo], f"hound-{hi}-{lo}",
                                                {"chosen": hi, "rejected": lo, "responses": len(texts)},
                                                chosen_score=hi_score, rejected_score=lo_score)], counts=counts))
        return built


def user_prompt_with_video(text: str, n_images: int, n_videos: int) -> list[dict]:
    """A user turn with its image items, then its video items, then the text."""
    if not n_videos:
        return user_prompt(text, n_images)
    content = [{"type": "image"}] * n_images + [{"type": "video"}] * n_videos + [{"type": "text", "text": text}]
    return [{"role": "user", "content": content}]
