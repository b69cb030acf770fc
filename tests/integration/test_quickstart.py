"""`align quickstart --fast` end to end from the command line: every step runs, every model is evaluated, and
the results files hold what was measured (whatever it is: the fast run is too short to promise an improvement)."""

from __future__ import annotations

import json
import math

import pytest

pytest.importorskip("torch")
pytestmark = pytest.mark.slow


def test_quickstart_fast_runs_the_whole_pipeline(run_cli, tmp_path):
    from PIL import Image

    out = tmp_path / "qs"
    result = run_cli("quickstart", "--fast", "--out", out)
    assert result.code == 0, result
    summary = json.loads((out / "results.json").read_text())
    assert summary["seeds"] == 1 and summary["config"]["fast"] is True
    rows = summary["rows"]
    # before, the preference method and its control, the on-policy round (also as "final") and its control
    assert set(rows) == {"sft", "mdpo", "sft-chosen", "round-1", "final", "final-control"}
    assert rows["final"] == rows["round-1"]
    for name, row in rows.items():
        for metric in ("partner_halluc", "chair_i", "chair_s", "recall", "pope_f1", "pope_adv_f1"):
            value = row[metric]["mean"]
            assert 0.0 <= value <= 1.0 and not math.isnan(value), (name, metric, value)
        assert row["len"]["mean"] > 3  # captions were generated
    # the models really differ: the DPO run and the control are not the SFT model under another name
    assert rows["mdpo"] != rows["sft"] and rows["sft-chosen"] != rows["sft"] and rows["final"] != rows["sft"]
    seed = out / "seed0"
    for name in ("sft", "dpo-mdpo", "sft-chosen", "iterate/round_1/model", "onpolicy-sft-corrections"):
        assert json.loads((seed / name / "run.json").read_text())["complete"]
    # the round's pairs: the model's own captions against the corrector's revisions, the changed words marked
    from align.data.io import read_records

    pairs = read_records(seed / "iterate" / "round_1" / "pairs")
    assert pairs and all(p["method"] == "correct" and (p["chosen_spans"] or p["rejected_spans"]) for p in pairs)
    control = json.loads((seed / "onpolicy-sft-corrections" / "run.json").read_text())
    dpo_steps = json.loads((seed / "iterate" / "round_1" / "model" / "run.json").read_text())["global_step"]
    assert control["global_step"] == dpo_steps  # the control trains as many steps on the chosen sides
    for name in ("sft", "mdpo", "sft-chosen", "round-1", "final-control"):
        assert (seed / "eval" / name / "captions.jsonl").is_file() and (seed / "eval" / name / "pope.jsonl").is_file()
    assert "partner_halluc" in (out / "results.md").read_text()
    with Image.open(out / "results.png") as image:
        assert len(image.getcolors(1 << 16)) > 3
    assert "mdpo" in result.out and "sft-chosen" in result.out
    # the cached reference log-probs went beside the pairs, inside the run folder
    assert list((seed / "world" / ".ref_logps").glob("*.safetensors"))


def test_quickstart_refuses_an_unknown_method_before_doing_anything(run_cli, tmp_path):
    out = tmp_path / "qs"
    result = run_cli("quickstart", "--fast", "--methods", "mdpo,ppo", "--out", out)
    assert result.code == 2, result
    assert "dpo, dpo+sft, mdpo" in result.out + result.err and "ppo" in result.out + result.err
    assert "Traceback" not in result.out + result.err
    assert not out.exists()

