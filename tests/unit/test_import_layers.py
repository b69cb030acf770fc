"""The import contracts of pyproject.toml ([tool.importlinter]): align's layers, no pair builder imported by
align's library, builders beside train and eval, and no import circle inside any package. A new upward import
or circle fails here with import-linter's report naming the import chain."""

from __future__ import annotations

from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).parents[2]


def test_the_import_contracts_hold(capsys):
    cli = pytest.importorskip("importlinter.cli")
    code = cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True, no_logo=True)
    report = capsys.readouterr().out
    assert code == 0, report
    assert "BROKEN" not in report and "0 broken" in report


def test_every_top_level_module_of_align_has_a_layer():
    """A new module under align/ must be placed in the layers contract, or nothing checks what it imports."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in config if c["type"] == "layers")["layers"]
    placed = {name.strip() for layer in layers for name in layer.replace(":", "|").split("|")}
    modules = {f"align.{p.stem if p.is_file() else p.name}" for p in (ROOT / "align").iterdir()
               if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").is_file()))
               and p.name not in ("__init__.py", "__main__.py")}
    assert modules - placed == set(), f"modules without a layer: {sorted(modules - placed)}"
