"""Outputs: what align did not write is never replaced without --overwrite, and what a killed process left half
written (a temporary beside the output) is cleaned up by the next run."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("torch")


def _one_line_error(result, *words):
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.err
    for word in words:
        assert word in lines[0], lines[0]


def test_build_pairs_refuses_to_replace_a_file_unless_told(shapes_world, run_cli, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    args = ["build-pairs", "halva", "--input", shapes_world / "sources.jsonl", "--out", notes, "--limit", "4"]
    _one_line_error(run_cli(*args), "exists and is a file", "--overwrite")
    assert notes.read_text() == "my notes\n"
    assert run_cli(*args, "--overwrite").code == 0
    assert (notes / "dataset.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]  # no .notes.txt.old-PID left behind


@pytest.mark.parametrize("command", ["build-pairs", "data-shapes", "sft", "eval", "models-tiny"])
def test_a_folder_align_did_not_write_is_refused(command, shapes_world, tiny_checkpoint, run_cli, tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("\\documentclass{article}")
    args = {
        "build-pairs": ["build-pairs", "halva", "--input", shapes_world / "sources.jsonl", "--out", foreign],
        "data-shapes": ["data", "shapes", "--out", foreign, "--n", "4"],
        "sft": ["sft", "--model", tiny_checkpoint("llava"), "--data", shapes_world / "sft.jsonl", "--output-dir",
                foreign, "max_steps=1"],
        "eval": ["eval", "shapes-pope", "--answers", shapes_world / "pope_all.jsonl", "--questions",
                 shapes_world / "pope_all.jsonl", "--out", foreign],
        "models-tiny": ["models", "tiny", "--family", "llava", "--out", foreign],
    }[command]
    _one_line_error(run_cli(*args), "is a folder align did not write", "--overwrite")
    assert sorted(p.name for p in foreign.iterdir()) == ["thesis.tex"]


def test_align_outputs_are_replaced_as_before(shapes_world, run_cli, tmp_path):
    out = tmp_path / "pairs"
    for _ in range(2):
        result = run_cli("build-pairs", "halva", "--input", shapes_world / "sources.jsonl", "--out", out, "--limit", "4")
        assert result.code == 0, result


def test_temporaries_of_a_process_killed_during_the_final_rename_are_removed(shapes_world, run_cli, tmp_path):
    """A kill between writing `.pairs.tmp-PID` and renaming it leaves the temporary; the next run removes it
    (its process is gone), and leaves a live process's temporary alone."""
    import os

    dead = tmp_path / ".pairs.tmp-999999999"
    dead.mkdir()
    (dead / "data-00000-of-00001.parquet").write_bytes(b"half")
    live = tmp_path / f".pairs.tmp-{os.getppid()}"
    live.mkdir()
    result = run_cli("build-pairs", "halva", "--input", shapes_world / "sources.jsonl", "--out", tmp_path / "pairs",
                     "--limit", "4")
    assert result.code == 0, result
    assert not dead.exists() and live.exists()
    assert json.loads((tmp_path / "pairs" / "dataset.json").read_text())["counts"]["rows"] == 4
