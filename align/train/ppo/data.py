"""Prompt rows for `align ppo`: `prompt` records (id, images, prompt: the user turn(s)), or SFT records whose
last assistant turn becomes the `reference` column (a shapes world's QA answers, a dataset's gold answers).
Every column besides images/prompt/messages reaches the reward functions."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.data.collate import Example, load_record_media
from align.errors import DataError

HIDDEN_COLUMNS = ("images", "prompt", "messages")


@dataclass
class PromptData:
    records: list[dict]
    origins: list[tuple[Any, int]]
    base_dir: Path | None
    image_root: Path | None

    def __len__(self) -> int:
        return len(self.records)

    def load(self, index: int) -> Example:
        record = self.records[index]
        path, row = self.origins[index]
        images, videos = load_record_media(record.get("images"), self.base_dir, self.image_root, path, row)
        return Example(list(record["prompt"]), images, videos)

    def columns(self, indices: list[int]) -> dict[str, list]:
        """Every extra column over `indices` (None where a row lacks it), for the reward functions."""
        names = sorted({k for i in indices for k in self.records[i] if k not in HIDDEN_COLUMNS})
        return {name: [self.records[i].get(name) for i in indices] for name in names}


def _from_sft(record: dict, path, row: int) -> dict:
    from align.data.messages import message_text

    messages = list(record["messages"])
    last = max((k for k, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    if last is None or last == 0:
        raise DataError(path, "an SFT row used as a prompt needs a user turn before its last assistant turn",
                        row=row, field="messages")
    out = {k: v for k, v in record.items() if k != "messages"}
    out["prompt"] = messages[:last]
    out["reference"] = message_text(messages[last])
    return out


def load_prompt_data(path: str | Path, image_root: str | Path | None = None) -> PromptData:
    from align.data.io import read_records
    from align.data.schema import detect_kind, validate_records

    records = read_records(path, image_root=image_root)
    if not records:
        raise DataError(path, "has no rows")
    kind = detect_kind(records.columns)
    if kind not in ("prompt", "sft"):
        raise DataError(path, f"holds {kind} records; PPO reads prompt records (id, images, prompt) or SFT "
                        "records (their last assistant turn becomes the 'reference' column)")
    validate_records(records, kind, path, records.base_dir, image_root, False, records.origins)
    rows = [_from_sft(r, *o) if kind == "sft" else dict(r) for r, o in zip(records, records.origins, strict=True)]
    for record, (origin, row) in zip(rows, records.origins, strict=True):
        if record["prompt"][-1].get("role") != "user":
            raise DataError(origin, "the prompt must end with a user turn (the model answers it)", row=row,
                            field="prompt")
    return PromptData(rows, list(records.origins), records.base_dir, Path(image_root) if image_root else None)
