"""Shared fixtures: tiny checkpoints built once per session, small image helpers, quiet single-thread torch."""

from __future__ import annotations

import os

import pytest

# Progress bars from transformers' weight loading and saving would flood the test log.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def pytest_configure(config):
    try:
        import torch
    except ImportError:
        return
    # Tiny models on 2 cores: one thread each (two oversubscribe); denormals slow AdamW steps ~10x.
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """tiny_checkpoint(family) -> folder of a tiny random checkpoint, built once per session and family."""
    built: dict[str, object] = {}

    def get(family: str, seed: int = 0):
        key = f"{family}-{seed}"
        if key not in built:
            from align.models.tiny import build_tiny

            built[key] = build_tiny(family, tmp_path_factory.mktemp(f"tiny-{key}"), seed=seed)
        return built[key]

    return get


@pytest.fixture
def make_image():
    """make_image(path, size=(32, 32), color="red") -> a small PNG on disk."""

    def make(path, size=(32, 32), color="red"):
        from PIL import Image

        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, color).save(path)
        return path

    return make


class CliResult:
    def __init__(self, code: int, out: str, err: str):
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, out={self.out[-500:]!r}, err={self.err[-500:]!r})"


@pytest.fixture
def run_cli(capsys):
    """run_cli("data", "show", path) -> CliResult(code, out, err), through the real entry point `main()`."""

    def run(*args) -> CliResult:
        from align.cli.main import main

        capsys.readouterr()
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="session")
def shapes_world(tmp_path_factory):
    """A small shapes world (16 images, 12 for training) shared by the training tests."""
    from align.data.shapes import ShapesConfig, generate_shapes_world

    out = tmp_path_factory.mktemp("shapes") / "world"
    generate_shapes_world(ShapesConfig(n=16, seed=3, image_size=64), out)
    return out


@pytest.fixture(scope="session")
def pairs(shapes_world, tmp_path_factory):
    """Folder with halva pairs (spans included, plus HSA severity scores) as JSONL files: all.jsonl, fixed.jsonl
    (2 rows), first4.jsonl, and broken ones (row 2 of each): nospans, badspans, unequal (halva: more chosen than rejected
    spans), noscores, noimages."""
    from align.cli.main import main
    from align.data.io import read_records, write_jsonl

    out = tmp_path_factory.mktemp("dpo-pairs") / "pairs"
    try:
        main(["build-pairs", "halva", "--input", str(shapes_world / "sources.jsonl"), "--out", str(out),
              "vocabulary=shapes"])
    except SystemExit as exc:
        assert exc.code in (0, None)
    rows = [dict(r) for r in read_records(out)]
    for i, r in enumerate(rows):  # HSA-DPO's scores: severity of the rejected response, rating of the chosen one
        r["rejected_score"] = 0.5 + 0.25 * (i % 4)
        r["chosen_score"] = 1.0
    write_jsonl(out / "all.jsonl", rows)
    write_jsonl(out / "fixed.jsonl", rows[:2])
    write_jsonl(out / "first4.jsonl", rows[:4])
    write_jsonl(out / "nospans.jsonl", [{k: v for k, v in r.items() if not k.endswith("_spans")} for r in rows[:2]])
    bad = [dict(r) for r in rows[:2]]
    bad[1]["rejected_spans"] = [[0, 10_000]]
    write_jsonl(out / "badspans.jsonl", bad)
    unequal = [dict(r) for r in rows[:2]]
    unequal[1]["chosen_spans"] = list(unequal[1]["chosen_spans"]) + [unequal[1]["chosen_spans"][0]]
    write_jsonl(out / "unequal.jsonl", unequal)
    noscores = [dict(r) for r in rows[:2]]
    del noscores[1]["rejected_score"]
    write_jsonl(out / "noscores.jsonl", noscores)
    noimages = [dict(r) for r in rows[:2]]
    noimages[1]["images"] = []
    noimages[1]["prompt"] = [{"role": m["role"], "content": [c for c in m["content"] if c.get("type") != "image"]}
                             if isinstance(m["content"], list) else m for m in noimages[1]["prompt"]]
    write_jsonl(out / "noimages.jsonl", noimages)
    return out
