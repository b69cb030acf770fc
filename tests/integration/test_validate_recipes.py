"""`align validate`: the whole recipes/ tree is valid, and broken recipes are all reported at once."""

from __future__ import annotations

from pathlib import Path

from align.recipes import validate_paths

REPO = Path(__file__).resolve().parents[2]


def test_every_recipe_in_the_tree_is_valid(run_cli, monkeypatch):
    monkeypatch.chdir(REPO)
    report = validate_paths([REPO / "recipes"])
    assert report.problems == []
    # subfolders are searched: nested recipes and the DeepSpeed JSON files are among those checked
    checked = {p.relative_to(REPO).as_posix() for p in report.checked}
    assert "recipes/deepspeed/zero3.json" in checked
    assert any(p.count("/") >= 2 and p.endswith((".yaml", ".yml")) for p in checked)
    result = run_cli("validate")
    assert result.code == 0, result
    assert f"{len(report.checked)} recipe file(s) valid" in result.out


def test_all_problems_in_all_files_are_reported(tmp_path, run_cli):
    kind = "shapes"
    folder = tmp_path / "recipes" / kind / "nested"
    folder.mkdir(parents=True)
    (folder / "a.yaml").write_text("no_such_key: 1\n")
    (folder / "b.yaml").write_text("seed: not-a-number\nanother_bad_key: 2\n")
    (tmp_path / "recipes" / "unknown_kind").mkdir()
    (tmp_path / "recipes" / "unknown_kind" / "c.yaml").write_text("x: 1\n")
    (tmp_path / "recipes" / "deepspeed").mkdir()
    (tmp_path / "recipes" / "deepspeed" / "broken.json").write_text("{\"zero_optimization\": {}")

    report = validate_paths([tmp_path / "recipes"])
    assert len(report.checked) == 4
    text = "\n".join(report.problems)
    assert len(report.problems) == 5, text
    assert "unknown key 'no_such_key'" in text and "unknown key 'another_bad_key'" in text
    assert "key 'seed'" in text and "no config kind 'unknown_kind'" in text and "not valid JSON" in text

    result = run_cli("validate", tmp_path / "recipes")
    assert result.code == 2
    assert result.err.strip().splitlines()[-1] == "error: 5 problem(s) in 4 recipe file(s)"
