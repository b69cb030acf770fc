"""`--resume` never trusts stale state: a checkpoint cut short by a crash is skipped (the newest complete one is
taken), a finished run with other settings is refused with what differs, and a finished run with the same
settings is not trained again. (The kill itself is reproduced by the state it leaves on disk.)"""

from __future__ import annotations

import json
import shutil

import pytest

torch = pytest.importorskip("torch")

SMALL = ["per_device_train_batch_size=2", "learning_rate=1e-2", "max_length=512", "logging_steps=1"]


def _sft(run_cli, model, world, out, *extra):
    return run_cli("sft", "--model", model, "--data", world / "sft.jsonl", "--output-dir", out, *SMALL, *extra)


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("command", ["sft", "dpo"])
def test_a_checkpoint_cut_short_is_skipped_and_resume_matches_the_uninterrupted_run(command, tiny_checkpoint,
                                                                                     shapes_world, pairs, run_cli,
                                                                                     tmp_path):
    """A kill while checkpoint-4 was written: its weights are there, trainer_state.json (written last) is not,
    and the final model was never written. --resume removes checkpoint-4, continues from checkpoint-2 and ends
    with the weights of the run that was never interrupted."""
    base = tiny_checkpoint("llava")
    data = shapes_world / "sft.jsonl" if command == "sft" else pairs / "first4.jsonl"
    args = [command, "--model", base, "--data", data, *SMALL, "max_steps=6", "save_strategy=steps", "save_steps=2"]
    full = tmp_path / "full"
    assert run_cli(*args, "--output-dir", full).code == 0

    killed = tmp_path / "killed"
    killed.mkdir()
    for step in (2, 4):
        shutil.copytree(full / f"checkpoint-{step}", killed / f"checkpoint-{step}")
    (killed / "checkpoint-4" / "trainer_state.json").unlink()
    record = json.loads((full / "run.json").read_text())
    record.update(complete=False)
    (killed / "run.json").write_text(json.dumps(record))  # the start record a crashed run leaves

    result = run_cli(*args, "--output-dir", killed, "--resume")
    assert result.code == 0, result
    assert "checkpoint-4 was cut short" in result.err + result.out
    run = json.loads((killed / "run.json").read_text())
    assert run["complete"] and run["resumed_from"].endswith("checkpoint-2")
    want, got = _weights(full), _weights(killed)
    assert want.keys() == got.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6)


def test_resume_into_a_finished_run_with_other_settings_is_refused(tiny_checkpoint, shapes_world, run_cli, tmp_path):
    out = tmp_path / "out"
    assert _sft(run_cli, tiny_checkpoint("llava"), shapes_world, out, "max_steps=2").code == 0
    before = (out / "run.json").read_bytes()
    result = _sft(run_cli, tiny_checkpoint("llava"), shapes_world, out, "max_steps=4", "--resume")
    assert result.code == 2, result
    assert "holds a run with other settings (max_steps: 2 -> 4)" in result.err
    assert (out / "run.json").read_bytes() == before


def test_resume_of_a_finished_run_with_the_same_settings_trains_nothing(tiny_checkpoint, shapes_world, run_cli,
                                                                        tmp_path):
    out = tmp_path / "out"
    assert _sft(run_cli, tiny_checkpoint("llava"), shapes_world, out, "max_steps=2").code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    result = _sft(run_cli, tiny_checkpoint("llava"), shapes_world, out, "max_steps=2", "logging_steps=5",
                  "--resume")  # how often it logs does not change the run
    assert result.code == 0, result
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
