"""RLAIF-V (Yu et al., CVPR 2025): divide-and-conquer AI feedback from open models.

For each prompt: k responses sampled from the policy (`--model`, temperature 0.7), or the row's own
`responses`; each response split into atomic claims (`splitter`), each claim turned into a yes/no question
(`questioner`), each question answered about the image by a labeler (`labeler`): a local VLM, judged by its
first answer token (yes when P(yes) + P(Yes) > P(no) + P(No)), or a Python callable. A response scores minus
the number of its claims judged wrong; every two responses whose scores differ by at least `min_gap` make a
pair (the higher chosen), and at most `pairs_per_prompt` of them are kept, drawn by the row's seed. Last, over
all pairs, RLAIF-V's length balancing: drop pairs whose chosen response is much shorter than the rejected one,
with the threshold that best evens the average lengths.

Components are named by one setting each: `rules` (the built-in rules of `align.data.claims`), a local
model folder or hub id, or a callable by dotted path `pkg.mod:func`:
    splitter(question: str, response: str) -> list[str]      # claims
    questioner(claim: str) -> str                            # a yes/no question
    labeler(question: str, source: dict) -> bool | float     # True (or P(yes) > 0.5): the claim holds
A labeler that raises, or returns anything else, drops that response from the prompt's pairs, counted in the
summary and dataset.json (never scored as a wrong claim). The shapes world ships an exact labeler:
`labeler=align.data.shapes_claims:labeler`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations

from align.data.claims import ANSWER_SUFFIX, split_claims, yes_no_question
from align.errors import ConfigError
from data_builders.base import DESCRIBE, Builder, Built, Source, record_prompt
from data_builders.build_settings import BuildConfig
from data_builders.judges import is_callable_spec, judge_callable, judge_each, load_callable

RULES = "rules"
LABELER_FAILED = "labeler failed (response dropped)"
SPLIT_PROMPT = ("Rewrite the answer to the question as a list of short, self-contained atomic facts about the "
                "image, one per line, each starting with '- '. Leave out opinions.\n\nQuestion: {question}\n"
                "Answer: {response}\n\n### Facts:")
QUESTION_PROMPT = ("Rewrite this statement as a general yes/no question, keeping any negation. Reply with the "
                   "question only.\n\nStatement: {claim}")


@dataclass
class RlaifvConfig(BuildConfig):
    samples: int = field(default=10, metadata={"help": "Responses sampled per prompt (RLAIF-V: 10)."})
    temperature: float = field(default=0.7, metadata={"help": "Sampling temperature of the responses (RLAIF-V: 0.7)."})
    max_new_tokens: int = field(default=512, metadata={"help": "Longest sampled response (RLAIF-V: 512)."})
    splitter: str = field(default=RULES, metadata={"help": "rules, a local chat LM, or pkg.mod:func."})
    questioner: str = field(default=RULES, metadata={"help": "rules, a local chat LM, or pkg.mod:func."})
    labeler: str | None = field(default=None, metadata={"help": "A local VLM, or pkg.mod:func (required)."})
    pairs_per_prompt: int = field(default=2, metadata={"help": "Pairs kept per prompt, drawn by its seed (RLAIF-V: 2)."})
    min_gap: float = field(default=1.0, metadata={"help": "Smallest score difference that makes a pair (RLAIF-V: 1)."})
    length_balance: bool = field(default=True, metadata={"help": "RLAIF-V's length-balancing filter over all pairs."})
    prompt: str = field(default=DESCRIBE, metadata={"help": "User prompt for rows without a question."})

    def __post_init__(self):
        super().__post_init__()
        problems = []
        if self.samples < 2:
            problems.append(f"samples must be >= 2 (a pair needs two responses), got {self.samples}")
        if self.pairs_per_prompt < 1:
            problems.append(f"pairs_per_prompt must be >= 1, got {self.pairs_per_prompt}")
        if not (self.min_gap > 0 and math.isfinite(self.min_gap)):
            problems.append(f"min_gap must be a finite number > 0, got {self.min_gap}")
        if problems:
            raise ConfigError(problems)


class RlaifvBuilder(Builder):
    name = "rlaifv"
    config_cls = RlaifvConfig
    on_policy = True
    required = ()

    def __init__(self, config: RlaifvConfig):
        super().__init__(config)
        self.split = self._splitter(config.splitter)
        self.ask = self._questioner(config.questioner)
        self.label_fn = judge_callable(config.labeler, "labeler", "rlaifv judges claims", "a local VLM")

    def prepare(self, records, input_info=None) -> None:
        self.require_model_or_responses(records)

    # ---- components

    def _splitter(self, spec: str):
        if spec == RULES:
            return lambda question, response: split_claims(response)
        if is_callable_spec(spec):
            return load_callable(spec, "splitter")

        def split(question: str, response: str) -> list[str]:
            text = self.local_model(spec).generate([[{"role": "user", "content": [{"type": "text", "text": SPLIT_PROMPT.format(
                question=question, response=" ".join(response.split()[:300]))}]}]], max_new_tokens=256)[0]
            return [line[2:].strip() for line in text.splitlines() if line.startswith("- ") and line[2:].strip()]

        return split

    def _questioner(self, spec: str):
        if spec == RULES:
            return yes_no_question
        if is_callable_spec(spec):
            return load_callable(spec, "questioner")

        def ask(claim: str) -> str:
            text = self.local_model(spec).generate([[{"role": "user", "content": [{"type": "text", "text":
                                                 QUESTION_PROMPT.format(claim=claim)}]}]], max_new_tokens=64)[0]
            line = next((ln.strip() for ln in text.splitlines() if ln.strip().endswith("?")), text.strip())
            return line + ANSWER_SUFFIX

        return ask

    def _labels(self, questions: list[tuple[int, str]], sources: list[Source]) -> list[bool | None]:
        """Per (source index, question): whether the claim holds; None where the labeler failed."""
        if self.label_fn is not None:
            return judge_each(self.label_fn, [(q, sources[k].record) for k, q in questions], read_label)
        labeler = self.local_model(self.config.labeler)
        conversations = [record_prompt(sources[k].record, q) for k, q in questions]
        images = [sources[k].load_images() for k, _ in questions]
        scores = labeler.answer_logprobs(conversations, images, {"yes": ["Yes", "yes"], "no": ["No", "no"]})
        return [s["yes"] > s["no"] if math.isfinite(s["yes"]) and math.isfinite(s["no"]) else None for s in scores]

    # ---- building

    def build(self, sources, chunk_seed: int) -> list[Built]:
        c = self.config
        sources = list(sources)
        responses = self.responses(sources, chunk_seed, c.samples, c.prompt)
        # every claim of every response, as (source, response, question)
        index: list[tuple[int, int]] = []
        questions: list[tuple[int, str]] = []
        for k, (source, texts) in enumerate(zip(sources, responses, strict=True)):
            question = source.record.get("question") or c.prompt
            for r, text in enumerate(texts):
                for claim in self.split(question, text):
                    index.append((k, r))
                    questions.append((k, self.ask(claim)))
        labels = self._labels(questions, sources)
        wrong: dict[tuple[int, int], int] = {}
        failed: set[tuple[int, int]] = set()
        for key, label in zip(index, labels, strict=True):
            if label is None:
                failed.add(key)
            wrong[key] = wrong.get(key, 0) + (label is False)
        built = []
        for k, (source, texts) in enumerate(zip(sources, responses, strict=True)):
            scored = [(r, -wrong.get((k, r), 0)) for r in range(len(texts)) if (k, r) not in failed]
            counts = {LABELER_FAILED: sum((k, r) in failed for r in range(len(texts)))}
            candidates = [(a, b) for (a, sa), (b, sb) in combinations(scored, 2)
                          if abs(sa - sb) >= c.min_gap and texts[a].strip() != texts[b].strip()]
            if not candidates:
                built.append(Built(skipped="no two responses differ enough in score", counts=counts))
                continue
            picked = source.rng.sample(candidates, min(c.pairs_per_prompt, len(candidates)))
            score = dict(scored)
            prompt = record_prompt(source.record, source.record.get("question") or c.prompt)
            pairs = []
            for a, b in sorted(picked):
                hi, lo = (a, b) if score[a] > score[b] else (b, a)
                pairs.append(self.pair(source, prompt, texts[hi], texts[lo], f"rlaifv-{hi}-{lo}",
                                       {"chosen": hi, "rejected": lo, "responses": len(texts)},
                                       chosen_score=float(score[hi]), rejected_score=float(score[lo])))
            built.append(Built(pairs=pairs, counts=counts))
        return built

    def finalize(self, pairs: list[dict]) -> tuple[list[dict], dict[str, int]]:
        if not self.config.length_balance or not pairs:
            return pairs, {}
        kept = length_balanced(pairs)
        return kept, {"length balancing": len(pairs) - len(kept)}


def read_label(value) -> bool:
    """A labeler's answer: True or False, or P(yes) in [0, 1] (yes above 0.5)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= 1:
        return value > 0.5
    raise ValueError(f"a labeler answer that is neither a bool nor a probability: {value!r:.40}")


def _words(messages: list[dict]) -> int:
    from align.data.messages import completion_text

    return len(completion_text(messages).split())


def length_balanced(pairs: list[dict]) -> list[dict]:
    """RLAIF-V's length balancing: keep pairs with (len_rejected - len_chosen) / len_rejected <= r (lengths in
    words), r from 0, 0.02, ..., 0.98 chosen to minimise |mean chosen length - mean rejected length| / mean
    rejected length over the kept pairs; on a tie the larger r (more pairs kept)."""
    lengths = [(_words(p["chosen"]), _words(p["rejected"])) for p in pairs]
    best: tuple[float, float] | None = None
    for step in range(50):
        r = step / 50
        kept = [(c, j) for c, j in lengths if j == 0 or (j - c) / j <= r]
        if not kept:
            continue
        mean_c = sum(c for c, _ in kept) / len(kept)
        mean_r = sum(j for _, j in kept) / len(kept)
        gap = abs(mean_c - mean_r) / mean_r if mean_r else 0.0
        if best is None or gap <= best[0]:
            best = (gap, r)
    r = best[1] if best is not None else 0.98
    return [p for p, (c, j) in zip(pairs, lengths, strict=True) if j == 0 or (j - c) / j <= r]
