"""Help texts that list names are built from the registries, so they list exactly the registered names."""

from __future__ import annotations

import re

import pytest


def _help(*command) -> str:
    from typer.testing import CliRunner

    from align.cli.main import app

    result = CliRunner().invoke(app, [*command, "--help"], terminal_width=400, env={"COLUMNS": "400"})
    assert result.exit_code == 0, result.output
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", result.output).split())


def _listed(text: str, lead: str) -> list[str]:
    match = re.search(re.escape(lead) + r"\s*([^.(]+)", text)
    assert match, (lead, text[:400])
    return [name.strip() for name in match.group(1).split(",")]


def test_variants_in_dpo_help():
    from align.train.dpo.variants import VARIANTS

    assert _listed(_help("dpo"), "Variant:") == list(VARIANTS)


def test_builders_in_build_pairs_help():
    from data_builders import BUILDERS

    assert _listed(_help("build-pairs"), "Builder:") == list(BUILDERS)


@pytest.mark.parametrize("command", ["sft", "dpo", "reward", "ppo"])
def test_policies_in_train_help(command):
    from align.models.freeze import POLICIES

    assert _listed(_help(command), "Trainable parts:") == list(POLICIES)


def test_quickstart_methods_and_default_in_help():
    from align.quickstart.pipeline import METHODS, QuickstartConfig

    text = _help("quickstart")
    assert _listed(text, "preference methods:") == list(METHODS)
    assert f"(default: {','.join(QuickstartConfig.methods)})" in text


@pytest.mark.parametrize("command", ["sft", "dpo", "reward", "ppo"])
def test_deepspeed_presets_in_train_help(command):
    from align.train.common import DEEPSPEED_PRESETS

    text = _help(command)
    match = re.search(r"--deepspeed\s+<\w+>\s+(.+?) or a DeepSpeed JSON file", text)
    assert match, text[:600]
    assert [name.strip() for name in match.group(1).split(",")] == list(DEEPSPEED_PRESETS)


def test_every_variant_module_registers_one_variant_and_its_settings():
    """The variants package registers every module's VARIANT; AlignDPOConfig has every variant's settings, each
    declared by one variant only."""
    import dataclasses
    import pkgutil

    import align.train.dpo.variants as package
    from align.train.dpo.settings import AlignDPOConfig
    from align.train.dpo.variants import VARIANTS

    modules = {m.name for m in pkgutil.iter_modules(package.__path__)} - {"base"}
    assert modules == set(VARIANTS)  # each variant lives in the module of its name
    config_fields = {f.name for f in dataclasses.fields(AlignDPOConfig)}
    declared: dict[str, str] = {}
    for variant in VARIANTS.values():
        for name in (f.name for f in (dataclasses.fields(variant.settings) if variant.settings else ())):
            assert name not in declared, f"{variant.name} and {declared[name]} both declare {name}"
            declared[name] = variant.name
    assert set(declared) <= config_fields and "ddpo_gamma" in declared and "halva_alpha" in declared
