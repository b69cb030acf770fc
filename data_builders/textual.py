"""What the rule-based builders share: the text a source offers, its objects, and corpus statistics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from data_builders.base import Builder, Source
from data_builders.config import BuildConfig
from data_builders.stats import cooccurrence, frequencies, object_classes

DESCRIBE = "Describe this image in detail."


@dataclass
class TextBuildConfig(BuildConfig):
    vocabulary: str = field(default="coco", metadata={"help": "Object vocabulary: coco, shapes or a file path."})
    max_swaps: int = field(default=1, metadata={"help": "Most phrases changed in one response."})
    prompt: str = field(default=DESCRIBE, metadata={"help": "User prompt for sources without a question."})


class TextBuilder(Builder):
    """A builder that edits ground-truth text, with statistics over the annotated objects of all sources."""

    def __init__(self, config: TextBuildConfig):
        super().__init__(config)
        from data_builders.vocab import get_vocabulary

        self.vocab = get_vocabulary(config.vocabulary)
        self.frequencies: dict[str, int] | None = None
        self.cooccurrence: dict[str, dict[str, int]] | None = None

    def prepare(self, records: Sequence[dict]) -> None:
        sets = [object_classes(r, self.vocab.canonical) for r in records]
        if any(sets):
            self.frequencies = dict(frequencies(sets))
            self.cooccurrence = {k: dict(v) for k, v in cooccurrence(sets).items()}

    def text_of(self, source: Source) -> tuple[str, str]:
        """(prompt, ground-truth response): the question and answer when there are both, else the caption."""
        record = source.record
        if record.get("question") and record.get("answer"):
            return record["question"], record["answer"]
        return self.config.prompt, record["caption"]

    def present(self, source: Source) -> list[dict]:
        return list(source.record.get("objects") or [])
