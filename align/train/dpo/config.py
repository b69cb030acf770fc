"""`AlignDPOConfig(DPOConfig)`: TRL's DPO settings plus the model, data, trainable parts and variant of a run."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import DPOConfig

from align.errors import ConfigError
from align.train.run_config import RunFields

# TRL's loss types (the list its DPOTrainer checks at the first step; a seam test compares the two).
TRL_LOSS_TYPES: tuple[str, ...] = (
    "sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot", "aot_unpaired",
    "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm",
)


@dataclass
class AlignDPOConfig(RunFields, DPOConfig):
    """DPOConfig plus what align needs to pick the variant, model, data and trainable parts."""

    variant: str = field(
        default="dpo",
        metadata={"help": "Preference-optimisation variant (see VARIANTS): dpo, ddpo, hsa, stic, mdpo, halva, povid."}
    )
    ref_model: str | None = field(
        default=None,
        metadata={"help": "Reference checkpoint; default: the policy's starting weights (adapter-disabled policy "
                          "when training LoRA, a separate frozen copy otherwise)."},
    )
    ddpo_gamma: float = field(
        default=1.1,
        metadata={"help": "ddpo: weight of the tokens inside chosen/rejected spans (1 elsewhere); RLHF-V's "
                          "run_RLHFV.sh uses 1.1, its dataclass default is 3.0."},
    )
    ddpo_average: bool = field(
        default=False,
        metadata={"help": "ddpo: divide each weighted log-prob by its summed weights (the paper's 1/N; Muffin's "
                          "dpo_use_average)."},
    )
    hsa_use_chosen_score: bool = field(
        default=False,
        metadata={"help": "hsa: also scale the chosen log-ratio by each row's chosen_score (HSA-DPO's "
                          "use_chosen_score, default off: chosen weight 1); rows must then carry chosen_score."},
    )
    stic_sft_coef: float = field(
        default=1 / 1024,
        metadata={"help": "stic: coefficient of the policy's summed chosen log-prob subtracted from the DPO loss "
                          "(STIC's code: 1/1024; 0 gives plain sigmoid DPO)."},
    )
    mdpo_anchor: float = field(
        default=0.0,
        metadata={"help": "mdpo: the reward anchor delta, -logsig(beta * chosen log-ratio - delta) (mDPO's code: 0)."},
    )
    mdpo_dpo_weight: float = field(
        default=1.0, metadata={"help": "mdpo: weight of the response-preference (plain DPO) term (mDPO: 1)."}
    )
    mdpo_conditional_weight: float = field(
        default=1.0,
        metadata={"help": "mdpo: weight of the conditional image-preference term, chosen under m beating chosen "
                          "under the corrupted m' (mDPO: 1)."},
    )
    mdpo_anchor_weight: float = field(
        default=1.0, metadata={"help": "mdpo: weight of the reward-anchor term (mDPO: 1)."}
    )
    halva_alpha: float = field(
        default=0.4,
        metadata={"help": "halva: weight of the forward KL(reference || policy) on kl_data samples (HALVA-7B 0.4, "
                          "HALVA-13B 0.5; 0 turns the term and the need for kl_data off)."},
    )
    kl_data: str | None = field(
        default=None,
        metadata={"help": "halva: SFT data (messages + images) whose assistant tokens carry the KL term; each pair "
                          "row r is matched with sample r mod N (HALVA: a subset of LLaVA-1.5's mix665k)."},
    )
    povid_text_weight: float = field(
        default=0.5, metadata={"help": "povid: weight of DPO(chosen, rejected) (POVID's code: 0.5)."}
    )
    povid_noise_weight: float = field(
        default=0.5, metadata={"help": "povid: weight of DPO(chosen, y_noise) (POVID's code: 0.5)."}
    )
    povid_noise_step: int = field(
        default=500, metadata={"help": "povid: diffusion step t of the noised image, of 1000 (POVID: 500)."}
    )
    ref_cache_dir: str | None = field(
        default=None,
        metadata={"help": "precompute_ref_log_probs: folder of the cached reference values (default: .ref_logps "
                          "beside the data)."},
    )

    def __post_init__(self):
        from align.train.dpo.variants import VARIANTS

        self.apply_device_defaults()
        problems = self.common_problems()
        if self.variant not in VARIANTS:
            problems.append(f"unknown variant '{self.variant}'; known variants: {', '.join(VARIANTS)}")
        if not isinstance(self.hsa_use_chosen_score, bool):
            problems.append(f"hsa_use_chosen_score must be true or false, got {self.hsa_use_chosen_score!r}")
        if self.variant == "halva" and self.halva_alpha > 0 and not self.kl_data:
            problems.append("variant halva needs kl_data (SFT samples for its KL term), or halva_alpha=0")
        if self.precompute_ref_log_probs and self.variant in VARIANTS and not VARIANTS[self.variant].cacheable:
            problems.append(f"variant {self.variant} cannot use precompute_ref_log_probs (its KL term needs the "
                            "reference's whole distribution on every step); set it to false")
        losses = [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type or [])
        unknown = [name for name in losses if name not in TRL_LOSS_TYPES]
        if unknown:
            problems.append(f"unknown loss_type {', '.join(map(repr, unknown))}; TRL's are {', '.join(TRL_LOSS_TYPES)}")
        if problems:
            raise ConfigError(problems)
        super().__post_init__()
        variant = VARIANTS[self.variant]
        if variant.sigmoid_only:
            extra = []
            if list(self.loss_type) != ["sigmoid"]:
                extra.append(f"loss_type must be sigmoid (got {self.loss_type})")
            if self.f_divergence_type != "reverse_kl":
                extra.append(f"f_divergence_type must be reverse_kl (got {self.f_divergence_type})")
            if self.ld_alpha is not None or self.use_weighting:
                extra.append("ld_alpha and use_weighting are TRL-loss options it does not use")
            if extra:
                raise ConfigError([f"variant {self.variant}: {p}" for p in extra])
