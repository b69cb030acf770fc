"""Prompt rows for the RL trainers (`align ppo`, `align grpo`): `prompt` records (id, images, prompt: the user turn(s)), or SFT records whose
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
        raise DataError(path, f"holds {kind} records; RL training reads prompt records (id, images, prompt) or SFT "
                        "records (their last assistant turn becomes the 'reference' column)")
    # Images are decoded now, before the first rollout: a bad one is an error naming its row, not a crash mid-run.
    validate_records(records, kind, path, records.base_dir, image_root, True, records.origins)
    rows = [_from_sft(r, *o) if kind == "sft" else dict(r) for r, o in zip(records, records.origins, strict=True)]
    for record, (origin, row) in zip(rows, records.origins, strict=True):
        if record["prompt"][-1].get("role") != "user":
            raise DataError(origin, "the prompt must end with a user turn (the model answers it)", row=row,
                            field="prompt")
    return PromptData(rows, list(records.origins), records.base_dir, Path(image_root) if image_root else None)


def check_prompt_lengths(prompts: PromptData, encoder, max_prompt_length: int | None, progress: bool = True) -> None:
    """Every prompt, encoded with its images as the rollouts encode it, fits `max_prompt_length` tokens; the first
    that does not is an error naming its row (checked before anything trains)."""
    from align.progress import progress_task

    if not max_prompt_length:
        return
    with progress_task("checking prompts", len(prompts), "rows", enabled=progress, transient=True) as task:
        for index in range(len(prompts)):
            length = int(encoder.encode([prompts.load(index)], add_generation_prompt=True)["input_ids"].shape[1])
            if length > max_prompt_length:
                path, row = prompts.origins[index]
                raise DataError(path, f"the prompt is {length} tokens long, over max_prompt_length "
                                f"{max_prompt_length}; raise it or shorten the prompt", row=row, field="prompt")
            if task is not None:
                task.advance()



def check_batch_prompt_length(attention_mask, rows: list[int], prompts: PromptData, max_prompt_length: int | None) -> None:
    """A rollout's encoded prompts (attention_mask [B, P]) fit `max_prompt_length`; else an error naming the longest
    one's row."""
    if not max_prompt_length or attention_mask.shape[1] <= max_prompt_length:
        return
    lengths = attention_mask.sum(dim=1)
    longest = int(lengths.argmax())
    if int(lengths[longest]) <= max_prompt_length:
        return
    path, row = prompts.origins[rows[longest]]
    raise DataError(path, f"the prompt is {int(lengths[longest])} tokens long, over max_prompt_length "
                    f"{max_prompt_length}; raise it or shorten the prompt", row=row)
