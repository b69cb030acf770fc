"""`align iterate` settings: the starting policy, the prompts, how many rounds, and one section per step of a
round (`pairs:` an on-policy builder's settings, `sft_first:` an optional SFT step on the chosen side, `dpo:` the
`align dpo` settings, `eval:` benchmarks run after each round)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from align.errors import ConfigError

REFERENCES = ("previous", "initial")
# Keys iterate fills in itself in each section, so a recipe may not set them.
OWNED_KEYS = {
    "pairs": ("input", "out", "model", "image_root", "limit", "seed"),
    "sft_first": ("model", "data", "output_dir", "image_root"),
    "dpo": ("model", "data", "output_dir", "ref_model", "image_root"),
}
EVAL_KEYS = ("benchmark", "questions", "images", "mode", "batch_size", "max_new_tokens", "prompt", "suffix",
             "options")


@dataclass
class IterateConfig:
    model: str | None = field(default=None, metadata={"help": "The starting policy: local folder or hub id."})
    data: str | None = field(default=None, metadata={"help": "Prompt rows (source records: id, images, question)."})
    output_dir: str | None = field(default=None, metadata={"help": "Run folder: round_1/, round_2/, ..., run.json."})
    image_root: str | None = field(default=None, metadata={"help": "Folder the rows' image paths resolve under "
                                                                   "(default: the data file's folder)."})
    rounds: int = field(default=4, metadata={"help": "Rounds of sample -> pairs -> train (RLAIF-V: 4). May grow "
                                                     "on resume."})
    prompts_per_round: int | None = field(
        default=None, metadata={"help": "Prompts each round takes, fresh ones in a seeded order while they last "
                                        "(RLAIF-V); default: every row in every round."})
    reference: str = field(
        default="previous",
        metadata={"help": "DPO reference of each round: previous (the round's starting policy, as RLAIF-V) or "
                          "initial (the starting model throughout)."})
    seed: int = field(default=0, metadata={"help": "Seed of the prompt order, sampling and training."})
    pairs: dict[str, Any] = field(
        default_factory=dict,
        metadata={"help": "The pair builder: `method` (an on-policy one) and its settings, as in recipes/pairs."})
    sft_first: dict[str, Any] | None = field(
        default=None,
        metadata={"help": "OPA-DPO's alignment step: `align sft` settings for training on each round's chosen "
                          "side before DPO, whose start and reference it then is (default: none)."})
    dpo: dict[str, Any] = field(default_factory=dict, metadata={"help": "`align dpo` settings (variant, beta, ...)."})
    eval: list[dict[str, Any]] = field(
        default_factory=list,
        metadata={"help": "Benchmarks after each round: {benchmark, questions, mode, ...} as `align eval` takes."})

    def __post_init__(self):
        problems = []
        if self.rounds < 1:
            problems.append(f"rounds must be >= 1, got {self.rounds}")
        if self.prompts_per_round is not None and self.prompts_per_round < 1:
            problems.append(f"prompts_per_round must be >= 1, got {self.prompts_per_round}")
        if self.reference not in REFERENCES:
            problems.append(f"reference must be one of {', '.join(REFERENCES)}, got '{self.reference}'")
        for section, keys in OWNED_KEYS.items():
            values = getattr(self, section) or {}
            owned = sorted(k for k in values if k in keys)
            if owned:
                problems.append(f"{section}: {', '.join(owned)} are set by align iterate in each round")
        for k, entry in enumerate(self.eval):
            if not isinstance(entry, dict) or "benchmark" not in entry or "questions" not in entry:
                problems.append(f"eval.{k}: needs `benchmark` and `questions`")
                continue
            unknown = sorted(set(entry) - set(EVAL_KEYS))
            if unknown:
                problems.append(f"eval.{k}: unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(EVAL_KEYS)}")
        if problems:
            raise ConfigError(problems)
        self.check_sections()

    def dpo_values(self, model: str, data: str, output_dir: str, ref_model: str | None,
                   image_root: str | None = None) -> dict[str, Any]:
        """The `align dpo` settings of one round (`image_root`: where pairs kept as paths resolve)."""
        return {"seed": self.seed, **self.dpo, "model": model, "data": data, "output_dir": output_dir,
                "ref_model": ref_model, "image_root": image_root}

    def sft_values(self, model: str, data: str, output_dir: str) -> dict[str, Any]:
        """The `align sft` settings of one round's alignment step (its data holds the images)."""
        return {"seed": self.seed, **(self.sft_first or {}), "model": model, "data": data, "output_dir": output_dir}

    def check_sections(self) -> None:
        """Build each section's config once with placeholders, so a bad key or value fails before any work
        (mixed-precision flags off for this check only: a GPU recipe is valid on a CPU machine)."""
        from align.resolve import build_dataclass
        from align.train.dpo.settings import AlignDPOConfig
        from align.train.sft.settings import AlignSFTConfig
        from data_builders import BUILDERS, builder_class

        method = self.pairs.get("method")
        on_policy = [m for m in BUILDERS if builder_class(m).on_policy]
        if method not in on_policy:
            raise ConfigError(f"pairs.method must name an on-policy builder ({', '.join(on_policy)}); got {method!r}")
        cls = builder_class(method)
        # Values typed by their command's config (an override `dpo.beta=0.2` arrives as a string), so the run
        # record and the resume check compare numbers with numbers.
        self.pairs = _typed(cls.config_cls, self.pairs, "pairs")
        self.dpo = _typed(AlignDPOConfig, self.dpo, "dpo")
        if self.sft_first is not None:
            self.sft_first = _typed(AlignSFTConfig, self.sft_first, "sft_first")
        cls(build_dataclass(cls.config_cls, {**self.pairs, "model": "policy"}, source="pairs"))
        no_device = {"bf16": False, "fp16": False, "tf32": None}
        build_dataclass(AlignDPOConfig, {**self.dpo_values("policy", "pairs", "round/model", None), **no_device},
                        source="dpo")
        if self.sft_first is not None:
            build_dataclass(AlignSFTConfig, {**self.sft_values("policy", "data", "round/sft"), **no_device},
                            source="sft_first")


def _typed(cls: type, values: dict[str, Any], section: str) -> dict[str, Any]:
    """`values` coerced to the types of `cls`'s fields, after every key and value is checked."""
    import json

    from align.resolve import check_values, coerce, type_hints

    problems = check_values(cls, values, source=section)
    if problems:
        raise ConfigError(problems)
    hints = type_hints(cls)
    typed = {key: coerce(value, hints.get(key, Any)) for key, value in values.items()}
    return json.loads(json.dumps(typed, default=str))  # plain values, as the run record holds them
