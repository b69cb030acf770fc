"""What the rule-based builders share: the text a source offers, its objects, and corpus statistics."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from align.errors import ConfigError
from data_builders.base import DESCRIBE, Builder, Source
from data_builders.build_settings import BuildConfig
from data_builders.stats import cooccurrence, frequencies, object_classes

AUTO = "auto"
# dataset.json kinds whose objects a built-in vocabulary names.
KIND_VOCABULARIES = {"shapes": "shapes"}


def input_vocabulary(input_info: dict | None) -> str:
    """The vocabulary an input declares: a shapes world's `dataset.json` says kind "shapes"; a pairs folder
    records the vocabulary it was built with. Anything else is COCO, the vocabulary of the papers' data."""
    info = input_info or {}
    recorded = (info.get("settings") or {}).get("vocabulary")
    if isinstance(recorded, str) and recorded != AUTO:
        return recorded
    return KIND_VOCABULARIES.get(str(info.get("kind")), "coco")


def vocabulary_mismatch(names: Sequence[str], vocabulary: str) -> str:
    """One line: none of the input's object names is in `vocabulary`; which built-in vocabularies know them."""
    from align.data.vocab import VOCABULARIES

    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    fits = []
    for name, make in VOCABULARIES.items():
        vocab = make()
        known = sum(vocab.canonical(n) is not None for n in names)
        if known and name != vocabulary:
            fits.append((known, name))
    hint = (f"vocabularies that know them: {', '.join(f'{n} ({k} of {len(names)})' for k, n in sorted(fits, reverse=True))}; "
            f"pass vocabulary={max(fits)[1]}") if fits else "pass vocabulary=PATH with a vocabulary file that lists them"
    return (f"none of the input's {len(names)} object names ({shown}) is a class of vocabulary '{vocabulary}'; "
            f"{hint}")


@dataclass
class TextBuildConfig(BuildConfig):
    vocabulary: str = field(
        default="auto",
        metadata={"help": "Object vocabulary: coco, shapes, a file path, or auto (the input's own, from the "
                          "dataset.json of its folder: shapes for a shapes world; else coco)."})
    max_swaps: int = field(default=1, metadata={"help": "Most phrases changed in one response."})
    prompt: str = field(default=DESCRIBE, metadata={"help": "User prompt for sources without a question."})


class TextBuilder(Builder):
    """A builder that edits ground-truth text, with statistics over the annotated objects of all sources."""

    def __init__(self, config: TextBuildConfig):
        super().__init__(config)
        from align.data.vocab import get_vocabulary

        # "auto" is settled in `prepare`, once the input is known.
        self.vocab = None if config.vocabulary == AUTO else get_vocabulary(config.vocabulary)
        self.frequencies: dict[str, int] | None = None
        self.cooccurrence: dict[str, dict[str, int]] | None = None

    def prepare(self, records: Sequence[dict], input_info: dict | None = None) -> None:
        from align.data.vocab import get_vocabulary

        if self.vocab is None:
            self.config.vocabulary = input_vocabulary(input_info)
            self.vocab = get_vocabulary(self.config.vocabulary)
        sets = [object_classes(r, self.vocab.canonical) for r in records]
        if any(sets):
            self.frequencies = dict(frequencies(sets))
            self.cooccurrence = {k: dict(v) for k, v in cooccurrence(sets).items()}
            return
        names = sorted({str(o.get("name", "")) for r in records for o in r.get("objects") or []} - {""})
        if names:
            raise ConfigError(vocabulary_mismatch(names, self.vocab.name))

    def text_of(self, source: Source) -> tuple[str, str]:
        """(prompt, ground-truth response): the question and answer when there are both, else the caption."""
        record = source.record
        if record.get("question") and record.get("answer"):
            return record["question"], record["answer"]
        return self.config.prompt, record["caption"]

    def present(self, source: Source) -> list[dict]:
        return list(source.record.get("objects") or [])
