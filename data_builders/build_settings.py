"""Settings every pair builder shares; each builder's own config subclasses `BuildConfig`."""

from __future__ import annotations

from dataclasses import dataclass, field

from align.errors import ConfigError

IMAGE_MODES = ("copy", "embed", "keep")


@dataclass
class BuildConfig:
    method: str | None = field(default=None, metadata={"help": "Builder name (the recipe's; the CLI argument wins)."})
    input: str | None = field(default=None, metadata={"help": "Source records: file or dataset folder."})
    image_root: str | None = field(default=None, metadata={"help": "Folder relative image paths resolve under."})
    out: str | None = field(default=None, metadata={"help": "Output dataset folder (written atomically)."})
    seed: int = field(default=0, metadata={"help": "Seed; every row's randomness derives from it and the row id."})
    limit: int | None = field(default=None, metadata={"help": "Use only the first N source rows."})
    chunk_size: int = field(
        default=256, metadata={"help": "Source rows per work chunk (the unit of resume and of sharding over ranks)."}
    )
    images: str = field(
        default="embed",
        metadata={"help": "Output images: embed (bytes in the shards, which `datasets.load_dataset` decodes "
                          "anywhere), copy (an images/ folder; smaller when many pairs share an image, but only "
                          "align resolves its relative paths) or keep (paths unchanged)."})
    # Model-based builders (generation).
    model: str | None = field(default=None, metadata={"help": "Local VLM that generates responses."})
    adapter: str | None = field(default=None, metadata={"help": "PEFT adapter applied to --model."})
    dtype: str = field(default="float32", metadata={"help": "Generation dtype: float32, bfloat16, float16, auto."})
    batch_size: int = field(default=8, metadata={"help": "Generation batch size."})
    max_new_tokens: int = field(default=256, metadata={"help": "Longest generated response in tokens."})
    temperature: float = field(default=0.0, metadata={"help": "Sampling temperature; 0 is greedy."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling mass."})

    def __post_init__(self):
        problems = []
        if self.images not in IMAGE_MODES:
            problems.append(f"images must be one of {', '.join(IMAGE_MODES)}, got '{self.images}'")
        if self.chunk_size < 1:
            problems.append(f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.limit is not None and self.limit < 1:
            problems.append(f"limit must be >= 1, got {self.limit}")
        if self.batch_size < 1:
            problems.append(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0.0 < self.top_p <= 1.0:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if problems:
            raise ConfigError(problems)

    def settings(self) -> dict:
        """What shapes the output (for dataset.json and the resume check): everything but where files live."""
        from align.resolve import config_to_dict

        values = config_to_dict(self)
        for key in ("input", "image_root", "out", "limit"):
            values.pop(key, None)
        return values
