"""`AlignDPOConfig` cross-field rules: unknown variants list the known ones; ddpo, hsa and stic only with the
sigmoid loss; stic's coefficient is a finite number >= 0; mdpo's weights and anchor are checked."""

from __future__ import annotations

import pytest

pytest.importorskip("trl")

from align.errors import ConfigError  # noqa: E402
from align.train.dpo.settings import AlignDPOConfig  # noqa: E402
from align.train.dpo.variants import VARIANTS  # noqa: E402


def test_unknown_variant_lists_the_known_ones(tmp_path):
    with pytest.raises(ConfigError) as exc:
        AlignDPOConfig(output_dir=str(tmp_path), variant="nope")
    assert "nope" in str(exc.value) and all(name in str(exc.value) for name in VARIANTS)


def test_dpo_passes_trl_loss_types_through(tmp_path):
    cfg = AlignDPOConfig(output_dir=str(tmp_path), variant="dpo", loss_type=["ipo"])
    assert cfg.loss_type == ["ipo"]


def test_ddpo_wants_the_sigmoid_loss(tmp_path):
    with pytest.raises(ConfigError, match="loss_type must be sigmoid"):
        AlignDPOConfig(output_dir=str(tmp_path), variant="ddpo", loss_type=["ipo"])


@pytest.mark.parametrize("variant", ["hsa", "stic"])
def test_hsa_and_stic_want_the_sigmoid_loss(variant, tmp_path):
    with pytest.raises(ConfigError, match=f"variant {variant}: loss_type must be sigmoid"):
        AlignDPOConfig(output_dir=str(tmp_path), variant=variant, loss_type=["ipo"])


def test_hsa_and_stic_defaults(tmp_path):
    cfg = AlignDPOConfig(output_dir=str(tmp_path), variant="hsa")
    assert cfg.hsa_use_chosen_score is False and cfg.stic_sft_coef == 1 / 1024
    assert VARIANTS["hsa"].score_fields(cfg) == ("rejected_score",)
    cfg = AlignDPOConfig(output_dir=str(tmp_path), variant="hsa", hsa_use_chosen_score=True)
    assert VARIANTS["hsa"].score_fields(cfg) == ("rejected_score", "chosen_score")
    assert VARIANTS["stic"].score_fields(cfg) == () and VARIANTS["dpo"].score_fields(cfg) == ()
    assert AlignDPOConfig(output_dir=str(tmp_path), variant="stic", stic_sft_coef=0.0).stic_sft_coef == 0.0


@pytest.mark.parametrize(("coef", "message"), [(-0.1, "stic_sft_coef must be >= 0, got -0.1"),
                                               (float("nan"), "stic_sft_coef must be a finite number, got nan"),
                                               (float("inf"), "stic_sft_coef must be a finite number, got inf")])
def test_stic_coefficient_is_finite_and_not_negative(coef, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        AlignDPOConfig(output_dir=str(tmp_path), variant="stic", stic_sft_coef=coef)


def test_cpu_defaults(tmp_path):
    cfg = AlignDPOConfig(output_dir=str(tmp_path))
    assert cfg.variant == "dpo" and cfg.remove_unused_columns is False and cfg.gradient_checkpointing is False


def test_mdpo_defaults_and_sigmoid_only(tmp_path):
    cfg = AlignDPOConfig(output_dir=str(tmp_path), variant="mdpo")
    assert (cfg.mdpo_anchor, cfg.mdpo_dpo_weight, cfg.mdpo_conditional_weight, cfg.mdpo_anchor_weight) == (
        0.0, 1.0, 1.0, 1.0)
    assert VARIANTS["mdpo"].row_groups == 3 and VARIANTS["dpo"].row_groups == 2  # + chosen under the corrupted m'
    with pytest.raises(ConfigError, match="variant mdpo: loss_type must be sigmoid"):
        AlignDPOConfig(output_dir=str(tmp_path), variant="mdpo", loss_type=["ipo"])


@pytest.mark.parametrize(("name", "value", "message"), [
    ("mdpo_dpo_weight", -1.0, "mdpo_dpo_weight must be >= 0, got -1.0"),
    ("mdpo_conditional_weight", float("nan"), "mdpo_conditional_weight must be a finite number, got nan"),
    ("mdpo_anchor_weight", float("inf"), "mdpo_anchor_weight must be a finite number, got inf"),
    ("mdpo_anchor", float("nan"), "mdpo_anchor must be a finite number"),
])
def test_mdpo_weights_and_anchor_are_checked(name, value, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        AlignDPOConfig(output_dir=str(tmp_path), variant="mdpo", **{name: value})


def test_mdpo_fields_have_help():
    from dataclasses import fields

    helps = {f.name: f.metadata.get("help", "") for f in fields(AlignDPOConfig)}
    for name in ("mdpo_anchor", "mdpo_dpo_weight", "mdpo_conditional_weight", "mdpo_anchor_weight"):
        assert helps[name].startswith("mdpo:"), name
