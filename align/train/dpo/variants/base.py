"""`Variant`: everything one `align dpo --variant` changes relative to TRL's DPOTrainer, in one object.

A variant declares
- its settings: a dataclass of fields (`settings`), mixed into `AlignDPOConfig`, each with its help and range;
- its config checks (`config_problems`; `sigmoid_only` variants refuse TRL's other loss options);
- what its rows must carry and what the collator adds to a batch (`data_options`, `collator_options`), and which
  row groups share prompt and images (`shared_pairs`, for prefix sharing);
- its loss (`compute_loss`, with the trainer's forward helpers and `align.train.dpo.logps`);
- the reference values it reads, whether they can be cached, and the settings that key the cache
  (`reference_values`, `cacheable`, `cache_settings`).

The trainer, the run and the collator call these hooks and never test a variant's name. A module in this package
that defines `VARIANT = SomeVariant()` is registered by `align.train.dpo.variants` under `VARIANT.name`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # torch loads only when a run starts: `align --help` stays fast
    import torch


class Variant:
    """A DPO variant; subclasses override what differs. Instances are stateless: hooks read the run's settings
    (`args`, an `AlignDPOConfig`) and the trainer they are given."""

    name: ClassVar[str]
    help: ClassVar[str]
    position: ClassVar[int] = 100  # order in listings (help texts, error messages); ties by name
    settings: ClassVar[type | None] = None  # a dataclass of this variant's own fields, mixed into AlignDPOConfig
    sigmoid_only: ClassVar[bool] = True  # only TRL's plain sigmoid loss (and none of its loss options) applies
    cacheable: ClassVar[bool] = True  # precompute_ref_log_probs can stand in for the reference model
    row_groups: ClassVar[int] = 2  # row groups per batch: [chosen, rejected] (+ chosen under m' for mdpo)
    # The two row groups whose rows share prompt and images (prefix_sharing lays each such pair out as one
    # sequence behind the shared prefix); None: no two do.
    shared_pairs: ClassVar[tuple[int, int] | None] = (0, 1)

    # ---- settings ----

    def config_problems(self, args) -> list[str]:
        """Cross-field problems of `args` for this variant, checked before TRL's own __post_init__."""
        return []

    def loss_option_problems(self, args) -> list[str]:
        """TRL loss options this variant does not use, checked after TRL's __post_init__ (which normalises
        loss_type to a list)."""
        if not self.sigmoid_only:
            return []
        problems = []
        if list(args.loss_type) != ["sigmoid"]:
            problems.append(f"loss_type must be sigmoid (got {args.loss_type})")
        if args.f_divergence_type != "reverse_kl":
            problems.append(f"f_divergence_type must be reverse_kl (got {args.f_divergence_type})")
        if args.ld_alpha is not None or args.use_weighting:
            problems.append("ld_alpha and use_weighting are TRL-loss options it does not use")
        return problems

    # ---- data ----

    def score_fields(self, args) -> tuple[str, ...]:
        """The per-row score fields this variant reads (checked on every row, then batched as float32 [B])."""
        return ()

    def data_options(self, args) -> dict[str, Any]:
        """Keyword arguments of `load_preference_data`: what every row must carry for this variant."""
        return {"score_fields": self.score_fields(args)}

    def collator_options(self, args, processor=None, family: str | None = None) -> dict[str, Any]:
        """Keyword arguments of `PreferenceCollator`: what this variant adds to a batch."""
        return {"scores": self.score_fields(args)}

    # ---- loss ----

    def compute_loss(self, trainer, model, inputs: dict, return_outputs: bool):
        """The mean loss of one batch (TRL's `_compute_loss` contract); logs its terms through the trainer."""
        raise NotImplementedError

    def token_weights(self, args, inputs: dict) -> torch.Tensor | None:
        """Per-token weights [N, T-1] of the sequence log-probs (aligned with the shifted labels), or None."""
        return None

    def average_logps(self, args) -> bool:
        """Whether sequence log-probs divide by the summed token weights."""
        return False

    # ---- reference ----

    def reference_values(self, trainer, module, inputs: dict) -> dict[str, torch.Tensor]:
        """The reference values [B] each that `compute_loss` reads from the batch under
        `precompute_ref_log_probs`, from one pass of the reference `module` over one batch: by default the
        weighted sequence log-probs of each row group (`align.train.dpo.logps.CACHED_GROUPS`)."""
        from align.train.dpo.logps import CACHED_GROUPS, sequence_logps

        args = trainer.args
        with trainer.accelerator.autocast():
            logps = sequence_logps(trainer, module, inputs, self.token_weights(args, inputs), self.average_logps(args),
                                   reference=True, ref_module=module)
        groups = self.row_groups
        return dict(zip(CACHED_GROUPS[:groups], logps.chunk(groups, dim=0), strict=True))

    def cache_settings(self, args) -> dict[str, Any]:
        """Settings of this variant that change its cached reference values (part of the cache key)."""
        return {}
