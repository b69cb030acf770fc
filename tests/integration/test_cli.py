"""The CLI shell: help for every command, version, one-line errors, --debug, `python -m align`, no torch on --help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from align import __version__

REPO = Path(__file__).resolve().parents[2]


def _command_paths():
    """Every command and sub-command path of the Typer app, e.g. ("data", "show")."""
    import typer.main

    from align.cli.main import app

    root = typer.main.get_command(app)
    paths = []

    def walk(cmd, prefix):
        paths.append(prefix)
        for name, sub in getattr(cmd, "commands", {}).items():
            walk(sub, (*prefix, name))

    walk(root, ())
    return paths


@pytest.mark.parametrize("path", _command_paths(), ids=lambda p: " ".join(p) or "align")
def test_help_renders_for_every_command(path, run_cli):
    result = run_cli(*path, "--help")
    assert result.code == 0, result
    assert "Usage" in result.out


def test_expected_commands_are_registered():
    names = {" ".join(p) for p in _command_paths()}
    for expected in ("validate", "data show", "data shapes", "models tiny", "models info", "models families"):
        assert expected in names


def test_version(run_cli):
    result = run_cli("--version")
    assert result.code == 0 and result.out.strip() == f"align {__version__}"


def test_align_error_is_one_line_with_exit_code_2(run_cli, tmp_path):
    result = run_cli("models", "tiny", "--family", "no-such-family", "--out", tmp_path / "m")
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown family 'no-such-family'")
    assert "llava" in lines[0]  # lists the known families
    assert "Traceback" not in result.err
    assert not (tmp_path / "m").exists()


def test_debug_shows_the_traceback(tmp_path):
    from align.cli.main import main
    from align.errors import UnknownNameError

    with pytest.raises(UnknownNameError):
        main(["--debug", "models", "tiny", "--family", "no-such-family", "--out", str(tmp_path / "m")])


def _run(*args, **kwargs):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO, timeout=120, **kwargs)


def test_python_dash_m_align_matches_the_console_script():
    result = _run("-m", "align", "--version")
    assert result.returncode == 0 and result.stdout.strip() == f"align {__version__}"
    bad = _run("-m", "align", "validate", "no/such/path")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == ["error: no such file or folder: no/such/path"]


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys\n"
        "from align.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "for sub in (['data', '--help'], ['models', '--help'], ['validate', '--help']):\n"
        "    try:\n        main(sub)\n    except SystemExit:\n        pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'trl', 'deepspeed', 'datasets') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))\n"
    )
    result = _run("-c", code)
    assert result.returncode == 0, result.stderr
    assert "HEAVY=\n" in result.stdout or result.stdout.rstrip().endswith("HEAVY=")
