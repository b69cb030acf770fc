"""Preference records for `align reward`: each side is (image, prompt, response[, reward prompt turn]) encoded
whole through the family's encoder, chosen rows first; every row is read and measured before training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.data.collate import ConversationEncoder, Example, load_record_media
from align.errors import DataError


@dataclass
class RewardData:
    records: list[dict]
    origins: list[tuple[Any, int]]
    base_dir: Path | None
    image_root: Path | None
    reward_prompt: str | None
    captions: dict[str, list[str]] | None
    seed: int
    dropped: int = 0

    def __len__(self) -> int:
        return len(self.records)

    def load_pair(self, index: int) -> tuple[Example, Example]:
        record = self.records[index]
        path, row = self.origins[index]
        images, videos = load_record_media(record.get("images"), self.base_dir, self.image_root, path, row)
        return (Example(self.messages(index, record["chosen"]), images, videos),
                Example(self.messages(index, record["rejected"]), images, videos))

    def messages(self, index: int, completion: list[dict]) -> list[dict]:
        from align.data.reward_prompts import reward_messages

        record = self.records[index]
        return reward_messages(record["prompt"], completion, self.reward_prompt, record, self.captions,
                               self.seed + index, self.origins[index])


def load_reward_data(path: str | Path, processor, family: str, image_root: str | Path | None,
                     reward_prompt: str | None, fact_captions: str | None, max_length: int | None,
                     too_long: str = "error", seed: int = 0) -> RewardData:
    """Read, check and measure every pair (both sides, reward prompt included)."""
    from align.data.io import read_records
    from align.data.reward_prompts import read_fact_captions
    from align.data.schema import validate_records

    records = read_records(path, image_root=image_root)
    if not records:
        raise DataError(path, "has no rows")
    validate_records(records, "preference", path, records.base_dir, image_root, False, records.origins)
    captions = read_fact_captions(fact_captions) if fact_captions else None
    data = RewardData(list(records), list(records.origins), records.base_dir,
                      Path(image_root) if image_root else None, reward_prompt, captions, seed)
    encoder = ConversationEncoder(processor, family)
    kept, origins = [], []
    for index in range(len(data)):
        lengths = [_length(encoder, example, reward_prompt is not None) for example in data.load_pair(index)]
        if max_length is not None and max(lengths) > max_length:
            if too_long == "error":
                path_, row = data.origins[index]
                raise DataError(path_, f"{max(lengths)} tokens (reward prompt included) exceed max_length "
                                f"{max_length}; raise max_length or set too_long=drop", row=row, field="chosen")
            data.dropped += 1
            continue
        kept.append(data.records[index])
        origins.append(data.origins[index])
    if not kept:
        raise DataError(path, f"every pair is longer than max_length {max_length}; raise max_length")
    data.records, data.origins = kept, origins
    return data


def _length(encoder: ConversationEncoder, example: Example, generation_prompt: bool) -> int:
    batch = encoder.encode([example], add_generation_prompt=generation_prompt)
    return int(batch["attention_mask"][0].sum())


class RewardCollator:
    """rows (a `row` index and the `split` it belongs to) -> one batch of 2B sequences, chosen rows first,
    left-padded."""

    def __init__(self, encoder: ConversationEncoder, splits: dict[str, RewardData]):
        self.encoder, self.splits = encoder, splits

    def __call__(self, features: list[dict]) -> dict:
        data = self.splits[features[0]["split"]]
        pairs = [data.load_pair(int(f["row"])) for f in features]
        examples = [p[0] for p in pairs] + [p[1] for p in pairs]  # [2B]
        return dict(self.encoder.encode(examples, add_generation_prompt=data.reward_prompt is not None))
