"""RLHF-V (Yu et al., CVPR 2024): fine-grained correctional feedback. A person (or any corrector) rewrites only
the hallucinated segments of a model's response; the corrected response is chosen, the original rejected, and
the replaced segments are marked on both sides (`chosen_spans` / `rejected_spans`), which `align dpo --variant
ddpo` weighs by `ddpo_gamma`.

Source rows: `question` (or the `prompt` setting), `original` (the model's response), `corrected` (its
revision), `images`. The segments come from a word-level diff (`align.data.diff.replaced_spans`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from align.data.diff import replaced_spans
from align.errors import ConfigError
from data_builders.base import DESCRIBE, Builder, Built, Source, record_prompt
from data_builders.build_settings import BuildConfig


@dataclass
class RlhfvConfig(BuildConfig):
    min_match: int = field(
        default=3,
        metadata={"help": "Shortest run of matching words kept as unchanged; shorter matches inside a correction "
                          "join the changed segment (RLHF-V's min_match_size, on its tokens: 3)."})
    prompt: str = field(default=DESCRIBE, metadata={"help": "User prompt for rows without a question."})

    def __post_init__(self):
        super().__post_init__()
        if self.min_match < 1:
            raise ConfigError(f"min_match must be >= 1, got {self.min_match}")


class RlhfvBuilder(Builder):
    name = "rlhfv"
    config_cls = RlhfvConfig
    required = ("original", "corrected")

    def build_one(self, source: Source) -> Built:
        record = source.record
        original, corrected = record["original"], record["corrected"]
        if original.strip() == corrected.strip():
            return Built(skipped="not corrected")
        # [] on both sides when the correction only inserted or deleted: a valid pair whose tokens all weigh 1
        chosen_spans, rejected_spans = replaced_spans(original, corrected, self.config.min_match)
        prompt = record_prompt(record, record.get("question") or self.config.prompt)
        pair = self.pair(source, prompt, corrected, original, "rlhfv",
                         {"segments": len(chosen_spans)},
                         chosen_spans=[list(s) for s in chosen_spans],
                         rejected_spans=[list(s) for s in rejected_spans])
        return Built(pairs=[pair])
