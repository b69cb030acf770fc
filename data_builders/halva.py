"""HALVA (Sarkar et al., ICLR 2025) data: correct vs hallucinated answers that differ only in swapped phrases.

closed: ground-truth object mentions swapped for absent classes that co-occur with the image's objects in the
        source corpus (adversarial, POPE-style); the paper's closed-set augmentation.
open:   swapped for any absent class of the vocabulary (random); the paper draws open-set phrases from an LLM,
        which a rule-based builder cannot, so this is the closest deterministic stand-in.
qa:     one-word yes/no answers about one object, yes and no balanced exactly (row parity): a present object
        (chosen "Yes", rejected "No") or an absent co-occurring one (chosen "No", rejected "Yes").
`chosen_spans[k]` and `rejected_spans[k]` mark the k-th swapped phrase pair; HALVA's loss contrasts them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from align.errors import ConfigError
from data_builders.base import Built, Source, user_prompt
from data_builders.textual import TextBuildConfig, TextBuilder

SUBSETS = ("closed", "open", "qa")
QA_TEMPLATE = "Is there {article} {name} in the image? Answer yes or no."


@dataclass
class HalvaConfig(TextBuildConfig):
    subset: str = field(default="closed", metadata={"help": "closed, open or qa (see data_builders/halva.py)."})
    strategy: str | None = field(
        default=None, metadata={"help": "Object strategy: random, popular, adversarial (default by subset)."}
    )
    max_swaps: int = field(default=3, metadata={"help": "Most phrases swapped in one answer."})

    def __post_init__(self):
        super().__post_init__()
        if self.subset not in SUBSETS:
            raise ConfigError(f"subset must be one of {', '.join(SUBSETS)}, got '{self.subset}'")
        from data_builders.corrupt.text import OBJECT_STRATEGIES

        if self.strategy is not None and self.strategy not in OBJECT_STRATEGIES:
            raise ConfigError(f"strategy must be one of {', '.join(OBJECT_STRATEGIES)}, got '{self.strategy}'")


class HalvaBuilder(TextBuilder):
    name = "halva"
    config_cls = HalvaConfig
    required = ("objects", ("caption", "answer"))

    def strategy(self) -> str:
        c: HalvaConfig = self.config  # type: ignore[assignment]
        if c.strategy:
            return c.strategy
        return "adversarial" if c.subset in ("closed", "qa") else "random"

    def build_one(self, source: Source) -> Built:
        if self.config.subset == "qa":  # type: ignore[attr-defined]
            return self._qa(source)
        from data_builders.corrupt.text import swap_objects

        prompt, answer = self.text_of(source)
        swap = swap_objects(answer, self.present(source), self.vocab, source.rng, strategy=self.strategy(),
                            max_swaps=self.config.max_swaps, frequencies=self.frequencies,
                            cooccurrence=self.cooccurrence)
        if swap is None:
            return Built(skipped="no swappable object")
        meta = {"subset": self.config.subset, "strategy": self.strategy(),  # type: ignore[attr-defined]
                "swaps": swap.as_dict()["swaps"]}
        pair = self.pair(source, user_prompt(prompt, len(source.record["images"])), answer, swap.corrupted,
                         self.config.subset, meta,  # type: ignore[attr-defined]
                         chosen_spans=[list(s) for s in swap.chosen_spans],
                         rejected_spans=[list(s) for s in swap.rejected_spans])
        return Built([pair])

    def _qa(self, source: Source) -> Built:
        from align.data.nouns import article

        present = {self.vocab.canonical(str(o.get("name", ""))) for o in self.present(source)} - {None}
        if not present:
            return Built(skipped="no known object")
        ask_present = source.row % 2 == 1  # alternate by row: yes and no balanced exactly
        if ask_present:
            name = source.rng.choice(sorted(present))
            chosen, rejected = "Yes", "No"
        else:
            name = self._absent(present, source)
            if name is None:
                return Built(skipped="no absent object")
            chosen, rejected = "No", "Yes"
        display = self.vocab.display_name(name)
        question = QA_TEMPLATE.format(article=article(display), name=display)
        meta = {"subset": "qa", "object": name, "present": ask_present}
        pair = self.pair(source, user_prompt(question, len(source.record["images"])), chosen, rejected, "qa", meta,
                         chosen_spans=[[0, len(chosen)]], rejected_spans=[[0, len(rejected)]])
        return Built([pair])

    def _absent(self, present: set[str], source: Source) -> str | None:
        """The absent class co-occurring most with the present ones (POPE adversarial), random on ties/none."""
        absent = [c for c in self.vocab.classes if c not in present]
        if not absent:
            return None
        table = self.cooccurrence or {}
        score = {c: sum(table.get(p, {}).get(c, 0) for p in present) for c in absent}
        best = max(score.values())
        return source.rng.choice(sorted(c for c in absent if score[c] == best))
