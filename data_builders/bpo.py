"""BPO (Pi et al., ECCV 2024) pairs: the ground truth (score 1) against bootstrapped negatives (score 0).

injection ("llm-hal"):  errors injected into the ground truth, rule-based (objects, attributes, relations) or
                        with `rewriter=MODEL`, a chat model prompted to inject them (the paper uses the MLLM's own
                        base LLM);
weakening ("mllm-hal"): `--model` answers the prompt shown the image under diffusion noise at t=900, applied
                        after CLIP normalisation as the released code does, so the answer leans on the language
                        prior. The released sampler contrasts clean and noisy logits (VCD) in the direction that
                        reduces hallucination; align follows the paper's description instead: the answer is
                        generated from the weakened image itself.
Every pair is ground truth vs one negative; samples whose ground truth exceeds `filter_size` words are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from align.errors import ConfigError
from data_builders.base import Built, Source, user_prompt
from data_builders.povid import CATEGORIES, noised_image_pairs, rewritten_pairs
from data_builders.textual import TextBuildConfig, TextBuilder

NEGATIVES = ("injection", "weakening")
SCORES = {"chosen_score": 1.0, "rejected_score": 0.0}


@dataclass
class BpoConfig(TextBuildConfig):
    negatives: list[str] = field(default_factory=lambda: ["injection", "weakening"],
                                 metadata={"help": "Negative types: injection (text), weakening (needs --model)."})
    rewriter: str | None = field(default=None, metadata={"help": "Chat model for injection (instead of rules)."})
    noise_step: int = field(default=900, metadata={"help": "Diffusion step t of the image weakening (of 1000)."})
    filter_size: int = field(default=350, metadata={"help": "Drop samples whose ground truth exceeds N words."})
    temperature: float = field(default=0.2, metadata={"help": "Sampling temperature of weakened-image answers."})

    def __post_init__(self):
        super().__post_init__()
        unknown = [n for n in self.negatives if n not in NEGATIVES]
        if unknown or not self.negatives:
            raise ConfigError(f"negatives must be a non-empty list of {', '.join(NEGATIVES)}, got {self.negatives}")


class BpoBuilder(TextBuilder):
    name = "bpo"
    config_cls = BpoConfig
    required = (("caption", "answer"),)

    @property
    def needs_model(self) -> bool:  # type: ignore[override]
        return "weakening" in self.config.negatives  # type: ignore[attr-defined]

    def build(self, sources: list[Source], chunk_seed: int) -> list[Built]:
        c: BpoConfig = self.config  # type: ignore[assignment]
        kept = [s for s in sources if len(self.text_of(s)[1].split()) <= c.filter_size]
        results: dict[str, Built] = {s.id: Built() for s in kept}
        per_type = []
        if "injection" in c.negatives:
            if c.rewriter:
                per_type.append(rewritten_pairs(self, kept, chunk_seed, c.rewriter, list(CATEGORIES), "bpo-inj",
                                                **SCORES))
            else:
                per_type.append([self._inject(s) for s in kept])
        if "weakening" in c.negatives:
            per_type.append(noised_image_pairs(self, kept, chunk_seed + 1, c.noise_step, "bpo-weak", space="clip",
                                               **SCORES))
        for built in per_type:
            for source, b in zip(kept, built, strict=True):
                results[source.id].pairs.extend(b.pairs)
        out = []
        for source in sources:
            if source.id not in results:
                out.append(Built(skipped=f"ground truth over {c.filter_size} words"))
            elif not results[source.id].pairs:
                out.append(Built(skipped="no negative"))
            else:
                out.append(results[source.id])
        return out

    def _inject(self, source: Source) -> Built:
        from data_builders.corrupt.text import inject

        prompt, truth = self.text_of(source)
        result = inject(truth, self.present(source), self.vocab, source.rng, max_swaps=self.config.max_swaps,
                        frequencies=self.frequencies, cooccurrence=self.cooccurrence)
        if result is None:
            return Built()
        meta = {"type": "llm-hal", "category": result.category, "swaps": result.as_dict()["swaps"]}
        return Built([self.pair(source, user_prompt(prompt, len(source.record["images"])), truth, result.corrupted,
                                "bpo-inj", meta, chosen_spans=[list(s) for s in result.chosen_spans],
                                rejected_spans=[list(s) for s in result.rejected_spans], **SCORES)])
