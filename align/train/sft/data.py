"""SFT data for training: read, convert (LLaVA conversations), validate, render grounding, measure every row.

Everything that can be wrong with a row is found here, before a model step runs and before anything is written:
missing or unreadable images, placeholder counts, empty or missing assistant turns, and rows longer than
`max_length` (image tokens are never cut silently).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from align.data.collate import CheckedRecords, ConversationEncoder, Example, Spans, load_record_media
from align.errors import DataError


@dataclass
class SFTData(CheckedRecords):
    spans: list[Spans] = field(kw_only=True)  # one per record

    def load_example(self, index: int) -> Example:
        record = self.records[index]
        path, row = self.origins[index]
        return example_of(record, self.base_dir, self.image_root, path, row)[0]


def example_of(record: dict, base_dir, image_root, path, row) -> tuple[Example, list[tuple[int, int]]]:
    """(Example, sizes of the still images) for one validated SFT record."""
    images, videos = load_record_media(record.get("images"), base_dir, image_root, path, row)
    return Example(record["messages"], images, videos), [im.size for im in images]


def grounding_format_for(family: str, requested: str) -> str:
    if requested != "auto":
        return requested
    return "qwen" if family.startswith("qwen") else "shikra"


def _render(record: dict, fmt: str, sizes: list[tuple[int, int]], task: str | None) -> dict:
    from align.data.grounding import add_task_identifier, render_record

    record = render_record(record, fmt, sizes)
    if task:
        record = add_task_identifier(record, task)
    return record


def _read(path: str | Path, image_root):
    from align.data.formats.llava import convert_llava, is_llava_format
    from align.data.io import read_records

    records = read_records(path, image_root=image_root)
    if is_llava_format(records.columns):  # conversations with from: human/gpt -> SFT records, same origins
        records = convert_llava(records, path, image_root)
    return records


def load_sft_data(
    path: str | Path,
    processor,
    family: str,
    image_root: str | Path | None = None,
    max_length: int | None = None,
    too_long: str = "error",
    grounding_format: str = "auto",
    task_identifier: str | None = None,
    progress: bool = True,
) -> SFTData:
    """Read and check every row; compute each row's assistant-token spans with the family's own encoder."""
    from align.data.schema import validate_records
    from align.progress import progress_task

    records = _read(path, image_root)
    if not records:
        raise DataError(path, "has no rows")
    validate_records(records, "sft", path, records.base_dir, image_root, False, records.origins)
    encoder = ConversationEncoder(processor, family)
    fmt = grounding_format_for(family, grounding_format)
    kept, spans, origins, dropped = [], [], [], 0
    with progress_task("preparing rows", len(records), "rows", enabled=progress, transient=True) as task:
        advance = task.advance if task is not None else lambda: None
        for record, (origin, row) in zip(records, records.origins, strict=True):
            example, sizes = example_of(record, records.base_dir, image_root, origin, row)
            rendered = _render(record, fmt, sizes, task_identifier)
            example.messages = rendered["messages"]
            layout = encoder.assistant_spans(example)
            if not layout.assistant:
                raise DataError(origin, "no assistant tokens to train on (empty assistant turns?)", row=row,
                                field="messages")
            if max_length is not None and layout.length > max_length:
                if too_long == "error":
                    raise DataError(origin, _too_long_message(layout, max_length), row=row, field="messages")
                dropped += 1
                advance()
                continue
            kept.append(rendered)
            spans.append(layout)
            origins.append((origin, row))
            advance()
    if not kept:
        raise DataError(path, f"every row is longer than max_length {max_length}; raise max_length")
    return SFTData(kept, records.base_dir, Path(image_root) if image_root else None, origins, dropped,
                   spans=spans)


def _too_long_message(layout: Spans, max_length: int) -> str:
    where = ""
    if layout.last_image_token >= max_length:
        where = f" and truncation would cut its image tokens (the last at position {layout.last_image_token})"
    return (f"{layout.length} tokens exceed max_length {max_length}{where}; raise max_length or set "
            "too_long=drop")
