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
              "vocabulary=shapes", "images=copy"])  # JSONL copies below need image paths, not bytes
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


@pytest.fixture(scope="session")
def colour_world(tmp_path_factory):
    """The RL tests' world: 600 single-shape 64 px images; `colour_qa.jsonl` holds the colour question of every
    train image as an SFT row (its answer, the true colour, becomes PPO's `reference` column)."""
    import json

    from align.data.io import write_jsonl
    from align.data.shapes import ShapesConfig, generate_shapes_world

    out = tmp_path_factory.mktemp("colour") / "world"
    generate_shapes_world(ShapesConfig(n=600, seed=1, image_size=64, max_objects=1, qa_per_image=4,
                                       eval_fraction=0.2), out)
    rows = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()]
    write_jsonl(out / "colour_qa.jsonl", [r for r in rows if "What color" in json.dumps(r["messages"][0])])
    return out


@pytest.fixture(scope="session")
def small_llava(tmp_path_factory):
    """The small tiny LLaVA (0.93M parameters, 64 px images in 16 px patches), random weights."""
    from align.models.tiny import build_tiny

    return build_tiny("llava", tmp_path_factory.mktemp("small-llava") / "base", seed=0, size="small")


@pytest.fixture(scope="session")
def colour_sft(colour_world, small_llava, tmp_path_factory):
    """colour_sft(seed) -> a small LLaVA (0.93M) after a short SFT (240 steps) on the colour questions: sampling,
    it names the asked shape's colour 30-50% of the time (built once per seed)."""
    built: dict[int, object] = {}

    def get(seed: int = 0):
        if seed not in built:
            from align.train.sft.run import run_sft
            from align.train.sft.settings import AlignSFTConfig

            out = tmp_path_factory.mktemp(f"colour-sft-{seed}") / "sft"
            config = AlignSFTConfig(model=str(small_llava), data=str(colour_world / "colour_qa.jsonl"), output_dir=str(out),
                                    train="all", max_steps=240, per_device_train_batch_size=16, learning_rate=1e-3,
                                    lr_scheduler_type="cosine", warmup_steps=8, seed=seed, save_strategy="no",
                                    logging_steps=50, report_to="none", disable_tqdm=True)
            run_sft(config, progress=False)
            built[seed] = out
        return built[seed]

    return get
