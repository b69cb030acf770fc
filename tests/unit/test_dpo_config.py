"""`AlignDPOConfig` cross-field rules: unknown variants list the known ones; ddpo only with the sigmoid loss."""

from __future__ import annotations

import pytest

pytest.importorskip("trl")

from align.errors import ConfigError  # noqa: E402
from align.train.dpo.config import AlignDPOConfig  # noqa: E402
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


def test_cpu_defaults(tmp_path):
    cfg = AlignDPOConfig(output_dir=str(tmp_path))
    assert cfg.variant == "dpo" and cfg.remove_unused_columns is False and cfg.gradient_checkpointing is False
