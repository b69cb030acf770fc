"""A quickstart seed folder records its settings; a rerun under other settings is refused, not mixed."""

from __future__ import annotations

import json

import pytest

from align.errors import ConfigError
from align.quickstart.pipeline import QuickstartConfig, check_settings


def test_a_rerun_with_the_same_settings_reuses_the_folder(tmp_path):
    cfg = QuickstartConfig(out=str(tmp_path))
    check_settings(cfg, tmp_path / "seed0")
    (tmp_path / "seed0" / "sft").mkdir()  # a finished step
    # where it goes, how many seeds, threads and methods do not change what the folder holds
    check_settings(QuickstartConfig(out="elsewhere", seeds=3, threads=1, methods=("dpo",)), tmp_path / "seed0")
    recorded = json.loads((tmp_path / "seed0" / "settings.json").read_text())
    assert recorded["n_images"] == cfg.n_images and recorded["palette"] == "by-class" and "methods" not in recorded


def test_other_settings_name_what_changed(tmp_path):
    check_settings(QuickstartConfig(), tmp_path / "seed0")
    with pytest.raises(ConfigError, match=r"n_images: 4000 -> 600; .*sft_steps: 700 -> 150"):
        check_settings(QuickstartConfig.fast_settings(), tmp_path / "seed0")


def test_a_folder_made_by_something_else_is_refused(tmp_path):
    (tmp_path / "seed0" / "world").mkdir(parents=True)
    with pytest.raises(ConfigError, match="records no quickstart settings"):
        check_settings(QuickstartConfig(), tmp_path / "seed0")
    assert not (tmp_path / "seed0" / "settings.json").exists()


def test_the_quickstart_world_recipe_is_the_world_seed_0_generates():
    from pathlib import Path

    from align.data.shapes import ShapesConfig
    from align.quickstart.pipeline import world_config
    from align.resolve import resolve_config

    recipe = Path(__file__).parents[2] / "recipes" / "shapes" / "variants" / "quickstart.yaml"
    assert resolve_config(ShapesConfig, recipe=recipe) == world_config(QuickstartConfig(seed=0))
