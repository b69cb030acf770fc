"""On-policy correction pairs (OPA-DPO, Yang et al., CVPR 2025; RLHF-V's correctional feedback on the model's
own answers): the policy's response is the rejected side and a corrector's minimal revision of it the chosen
side, so both sides stay close to what the model itself writes. The changed segments are marked on both sides
(`chosen_spans` / `rejected_spans`, every inserted, deleted or replaced word), which `align dpo --variant ddpo`
weighs by `ddpo_gamma`, so the loss falls on exactly the corrected tokens.

Responses: `samples` per prompt from `--model` (greedy by default: the model's own answer), or the row's own
`responses` (or `response`). The corrector is named by one setting:
    corrector=pkg.mod:func     func(question: str, response: str, source: dict) -> str   (the revision)
    corrector=MODEL            a local VLM asked, with the image, for a minimal revision (`revision_prompt`)
The shapes world ships an exact one: `corrector=align.data.shapes_corrector:corrector`. A response the corrector
leaves unchanged makes no pair (it is already right), nor does an empty revision (nothing was right); a corrector
that raises or returns something other than text is counted and makes no pair, never a silent pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from align.data.diff import changed_spans
from align.errors import ConfigError
from data_builders.base import DESCRIBE, Builder, Built, Source, own_responses, record_prompt
from data_builders.build_settings import BuildConfig
from data_builders.judges import judge_callable, judge_each

CORRECTOR_FAILED = "corrector failed (response dropped)"
REVISION_EMPTY = "revision empty (every statement wrong)"
REVISION_PROMPT = ("Here is a question about the image and an answer to it.\n\nQuestion: {question}\nAnswer: "
                   "{response}\n\nRewrite the answer, changing as little as possible: fix or delete each statement "
                   "that is wrong about the image and copy every other word unchanged. Reply with the revised answer "
                   "only.")


@dataclass
class CorrectConfig(BuildConfig):
    corrector: str | None = field(default=None, metadata={"help": "A local VLM, or pkg.mod:func (required)."})
    samples: int = field(default=1, metadata={"help": "Responses sampled per prompt, each corrected into a pair."})
    min_match: int = field(
        default=3, metadata={"help": "Shortest run of matching words kept as unchanged in the spans (RLHF-V: 3)."})
    revision_prompt: str = field(
        default=REVISION_PROMPT,
        metadata={"help": "What a model corrector is asked, with {question} and {response} filled in."})
    prompt: str = field(default=DESCRIBE, metadata={"help": "User prompt for rows without a question."})

    def __post_init__(self):
        super().__post_init__()
        problems = []
        if self.samples < 1:
            problems.append(f"samples must be >= 1, got {self.samples}")
        if self.min_match < 1:
            problems.append(f"min_match must be >= 1, got {self.min_match}")
        missing = [k for k in ("{question}", "{response}") if k not in self.revision_prompt]
        if missing:
            problems.append(f"revision_prompt must contain {' and '.join(missing)}")
        if problems:
            raise ConfigError(problems)


class CorrectBuilder(Builder):
    name = "correct"
    config_cls = CorrectConfig
    on_policy = True
    required = ()

    def __init__(self, config: CorrectConfig):
        super().__init__(config)
        self.correct_fn = judge_callable(config.corrector, "corrector", "correct revises responses", "a local VLM")

    def prepare(self, records, input_info=None) -> None:
        if not self.config.model and not all(own_responses(r) for r in records):
            raise ConfigError("correct revises the policy's responses: pass --model MODEL to sample them, or give "
                              "every row `responses` (a list) or `response`")

    def _revisions(self, calls: list[tuple[int, str, str]], sources: list[Source]) -> list[str | None]:
        """Per (source index, question, response): the corrector's revision, None where it failed."""
        if self.correct_fn is not None:
            return judge_each(self.correct_fn, [(q, r, sources[k].record) for k, q, r in calls], _read_revision)
        model = self.local_model(self.config.corrector)
        conversations = [record_prompt(sources[k].record, self.config.revision_prompt.format(question=q, response=r))
                         for k, q, r in calls]
        images = [sources[k].load_images() for k, _, _ in calls]
        texts = model.generate(conversations, images, max_new_tokens=self.config.max_new_tokens)
        return [t.strip() for t in texts]

    def build(self, sources, chunk_seed: int) -> list[Built]:
        c = self.config
        sources = list(sources)
        responses = self.responses(sources, chunk_seed, c.samples, c.prompt)
        calls = [(k, source.record.get("question") or c.prompt, text)
                 for k, (source, texts) in enumerate(zip(sources, responses, strict=True)) for text in texts]
        revisions = iter(self._revisions(calls, sources))
        built = []
        for source, texts in zip(sources, responses, strict=True):
            prompt = record_prompt(source.record, source.record.get("question") or c.prompt)
            pairs, failed, emptied, seen = [], 0, 0, set()
            for r, text in enumerate(texts):
                revised = next(revisions)
                if revised is None:
                    failed += 1
                elif not revised:  # every statement was wrong: no revision to prefer
                    emptied += 1
                elif revised != text.strip() and text.strip() not in seen:
                    seen.add(text.strip())
                    chosen_spans, rejected_spans = changed_spans(text, revised, c.min_match)
                    pairs.append(self.pair(source, prompt, revised, text, f"correct-{r}",
                                           {"response": r, "segments": len(chosen_spans) + len(rejected_spans)},
                                           chosen_spans=[list(s) for s in chosen_spans],
                                           rejected_spans=[list(s) for s in rejected_spans]))
            counts = {CORRECTOR_FAILED: failed, REVISION_EMPTY: emptied}
            if pairs:
                built.append(Built(pairs=pairs, counts=counts))
            else:
                reason = ("the corrector failed" if failed == len(texts) else
                          "every revision empty" if emptied == len(texts) else "nothing to correct")
                built.append(Built(skipped=reason, counts=counts))
        return built


def _read_revision(value) -> str:
    if not isinstance(value, str):
        raise ValueError(f"a revision that is not text: {value!r:.40}")
    return value.strip()
