"""POVID (Zhou et al., 2024) pairs: the ground truth against injected hallucinations.

stage 1: rejected = the ground truth with a hallucination injected in one of three categories (object
         co-occurrence, logical relation, entity attribute), rule-based (the paper prompts GPT-4V; its prompt is
         not public) or, with `rewriter=MODEL`, by a local chat model prompted to inject one.
stage 2: rejected = what `--model` answers when shown the image under diffusion forward noise at t=500 (sigmoid
         beta schedule, T=1000), the model's own "inherent" hallucination.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from align.errors import ConfigError
from align.seeds import derive_seed
from data_builders.base import Built, Source, user_prompt
from data_builders.textual import TextBuildConfig, TextBuilder

CATEGORIES = ("object", "relation", "attribute")
REWRITE_PROMPT = (
    "Rewrite the description below so that it contains one plausible hallucination: {what}. Keep everything else "
    "the same and answer with the rewritten description only.\n\nDescription: {text}"
)
_REWRITE_WHAT = {
    "object": "add or swap in an object that often appears in such scenes but is not in this one",
    "relation": "change a spatial or logical relation between two things",
    "attribute": "change a colour, size, count or position of something",
}


@dataclass
class PovidConfig(TextBuildConfig):
    stage: int = field(default=1, metadata={"help": "1: text injection; 2: the model answers a noised image."})
    categories: list[str] = field(default_factory=lambda: list(CATEGORIES),
                                  metadata={"help": "Injection categories for stage 1."})
    rewriter: str | None = field(default=None, metadata={"help": "Chat model that injects (instead of rules)."})
    noise_step: int = field(default=500, metadata={"help": "Diffusion step t of the stage-2 image noise (of 1000)."})

    def __post_init__(self):
        super().__post_init__()
        if self.stage not in (1, 2):
            raise ConfigError(f"stage must be 1 or 2, got {self.stage}")
        unknown = [c for c in self.categories if c not in CATEGORIES]
        if unknown:
            raise ConfigError(f"unknown categories {unknown}; known: {', '.join(CATEGORIES)}")


class PovidBuilder(TextBuilder):
    name = "povid"
    config_cls = PovidConfig
    required = (("caption", "answer"),)

    @property
    def needs_model(self) -> bool:  # type: ignore[override]
        return self.config.stage == 2  # type: ignore[attr-defined]

    def build(self, sources: list[Source], chunk_seed: int) -> list[Built]:
        c: PovidConfig = self.config  # type: ignore[assignment]
        if c.stage == 2:
            return noised_image_pairs(self, sources, chunk_seed, c.noise_step, "povid-s2")
        if c.rewriter:
            return rewritten_pairs(self, sources, chunk_seed, c.rewriter, c.categories, "povid-s1")
        return [self._inject(s) for s in sources]

    def _inject(self, source: Source) -> Built:
        from data_builders.corrupt.text import inject

        c: PovidConfig = self.config  # type: ignore[assignment]
        prompt, answer = self.text_of(source)
        result = inject(answer, self.present(source), self.vocab, source.rng, categories=list(c.categories),
                        max_swaps=c.max_swaps, frequencies=self.frequencies, cooccurrence=self.cooccurrence)
        if result is None:
            return Built(skipped="nothing to inject")
        meta = {"stage": 1, "category": result.category, "swaps": result.as_dict()["swaps"], "rewriter": None}
        return Built([self.pair(source, user_prompt(prompt, len(source.record["images"])), answer, result.corrupted,
                                "povid-s1", meta, chosen_spans=[list(s) for s in result.chosen_spans],
                                rejected_spans=[list(s) for s in result.rejected_spans])])


def noised_image_pairs(builder: TextBuilder, sources: list[Source], chunk_seed: int, t: int, suffix: str,
                       space: str = "unit", **extra) -> list[Built]:
    """Ground truth vs the model's answer on the diffusion-noised image (POVID stage 2, BPO image weakening)."""
    from align.data.image_corruptions import apply_corruption

    c = builder.config
    prompts, images, records = [], [], []
    for source in sources:
        prompt, _ = builder.text_of(source)
        clean = source.load_images()
        noised, recs = apply_corruption("diffusion_noise", clean, seed=derive_seed(c.seed, suffix, source.id), t=t,
                                       space=space)
        prompts.append(user_prompt(prompt, len(clean)))
        images.append(noised)
        records.append(recs)
    answers = builder.generator.generate(prompts, images, seed=chunk_seed, max_new_tokens=c.max_new_tokens,
                                         temperature=c.temperature, top_p=c.top_p)
    built = []
    for source, prompt, answer, recs in zip(sources, prompts, answers, records, strict=True):
        _, truth = builder.text_of(source)
        if not answer.strip():
            built.append(Built(skipped="empty generation"))
        elif answer.strip() == truth.strip():
            built.append(Built(skipped="generation equals ground truth"))
        else:
            meta = {"noise_step": t, "corruption": recs, "model": c.model, "type": "mllm-hal"}
            built.append(Built([builder.pair(source, prompt, truth, answer, suffix, meta, **extra)]))
    return built


def rewritten_pairs(builder: TextBuilder, sources: list[Source], chunk_seed: int, rewriter: str,
                    categories: list[str], suffix: str, **extra) -> list[Built]:
    """Ground truth vs a chat model's rewrite with one injected hallucination (category drawn per row)."""
    c = builder.config
    chosen_categories = [s.rng.choice(list(categories)) for s in sources]
    requests = [[{"role": "user", "content": [{"type": "text", "text": REWRITE_PROMPT.format(
        what=_REWRITE_WHAT[cat], text=builder.text_of(s)[1])}]}] for s, cat in zip(sources, chosen_categories,
                                                                                   strict=True)]
    rewrites = builder.local_model(rewriter).generate(requests, None, seed=chunk_seed, max_new_tokens=c.max_new_tokens,
                                          temperature=c.temperature, top_p=c.top_p)
    built = []
    for source, category, rewrite in zip(sources, chosen_categories, rewrites, strict=True):
        prompt, truth = builder.text_of(source)
        if not rewrite.strip() or rewrite.strip() == truth.strip():
            built.append(Built(skipped="rewrite empty or unchanged"))
            continue
        meta = {"category": category, "rewriter": rewriter, "type": "llm-hal"}
        built.append(Built([builder.pair(source, user_prompt(prompt, len(source.record["images"])), truth, rewrite,
                                         suffix, meta, **extra)]))
    return built
