"""`AlignDPOConfig(DPOConfig)`: TRL's DPO settings plus the model, data, trainable parts and variant of a run.

Each variant's own settings (ddpo_gamma, mdpo_anchor, ...) are declared with the variant
(`align.train.dpo.variants.<name>`) and mixed in here; so are its config checks."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import DPOConfig

from align.errors import ConfigError
from align.models.families import FAMILIES
from align.train.dpo.variants import VARIANTS, variant_settings
from align.train.run_config import RunFields

_SHARED_FAMILIES = ", ".join(f.name for f in FAMILIES.values() if f.shared_layouts)

# TRL's loss types (the list its DPOTrainer checks at the first step; a seam test compares the two).
TRL_LOSS_TYPES: tuple[str, ...] = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
    "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)


@dataclass
class AlignDPOConfig(RunFields, *variant_settings(), DPOConfig):
    """DPOConfig plus what align needs to pick the variant, model, data and trainable parts."""

    variant: str = field(
        default="dpo",
        metadata={"help": f"Preference-optimisation variant: {', '.join(VARIANTS)}."}
    )
    ref_model: str | None = field(
        default=None,
        metadata={"help": "Reference checkpoint; default: the policy's starting weights (adapter-disabled policy "
                          "when training LoRA, a separate frozen copy otherwise)."},
    )
    shared_image_encoding: bool | None = field(
        default=None,
        metadata={"help": "Encode each image once per step for every model call (policy and reference; mdpo's "
                          "corrupted image too); default: on when nothing in the vision encoder trains and the "
                          "reference starts from the policy's weights."},
    )
    prefix_sharing: bool | None = field(
        default=None,
        metadata={"help": "Lay each pair out as one sequence [shared prompt and image, chosen, rejected], the two "
                          "responses masked from each other: the prefix and image are computed once per pair; "
                          f"default: on for the families that support it ({_SHARED_FAMILIES})."},
    )
    padding_free: bool | None = field(  # replaces TRL's own field (which its DPOTrainer switches off)
        default=None,
        metadata={"help": "Pack a batch's sequences into rows without padding (attention kept within each "
                          f"sequence); default: on for the families that support it ({_SHARED_FAMILIES})."},
    )
    ref_cache_dir: str | None = field(
        default=None,
        metadata={"help": "precompute_ref_log_probs: folder of the cached reference values (default: .ref_logps "
                          "beside the data)."},
    )

    def __post_init__(self):
        self.apply_device_defaults()
        problems = self.common_problems()
        variant = VARIANTS.get(self.variant)
        if variant is None:
            problems.append(f"unknown variant '{self.variant}'; known variants: {', '.join(VARIANTS)}")
        else:
            problems += variant.config_problems(self)
            if self.precompute_ref_log_probs and not variant.cacheable:
                problems.append(f"variant {self.variant} cannot use precompute_ref_log_probs (its loss needs the "
                                "reference model on every step); set it to false")
        losses = [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type or [])
        unknown = [name for name in losses if name not in TRL_LOSS_TYPES]
        if unknown:
            problems.append(f"unknown loss_type {', '.join(map(repr, unknown))}; TRL's are {', '.join(TRL_LOSS_TYPES)}")
        if problems:
            raise ConfigError(problems)
        super().__post_init__()
        extra = variant.loss_option_problems(self)
        if extra:
            raise ConfigError([f"variant {self.variant}: {p}" for p in extra])
