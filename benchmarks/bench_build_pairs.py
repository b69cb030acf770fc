"""Pair-building throughput on this machine:

- rule-based pairs per second for `halva` and `povid` stage 1 on shapes sources (the whole pipeline: reading,
  building, validating, writing parquet; and the builder alone);
- source rows per second for the feedback builders `rlhfv` (each caption against a copy with one shape named
  wrongly), `vlfeedback` (the caption and three corrupted copies, rated on three aspects) and `rlaifv` (the same
  four responses, claims split and asked by the rules, labelled by the shapes world's exact checker), `hsa`
  (severity from the exact checker) and `hound` (four-frame videos, responses judged against the caption);
- images per second for each image corruption at 336x336 (see benchmarks/bench_image_corruptions.py for more);
- generation tokens per second, batched vs one at a time, with the same tiny model.

    python benchmarks/bench_build_pairs.py [--images 2000] [--threads 1]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path


def rule_based(world: Path, tmp: Path) -> None:
    import json

    from align.seeds import derive_seed
    from data_builders import builder_class
    from data_builders.base import Source, run_build

    rows = [json.loads(line) for line in (world / "sources.jsonl").read_text().splitlines()]
    for method, extra in (("halva", {}), ("povid", {"stage": 1})):
        cls = builder_class(method)
        config = cls.config_cls(method=method, input=str(world / "sources.jsonl"), out=str(tmp / method),
                                vocabulary="shapes", **extra)
        builder = cls(config)
        builder.prepare(rows)
        sources = [Source(r, None, i + 1, world, None, random.Random(derive_seed(0, method, r["id"])))
                       for i, r in enumerate(rows)]
        start = time.perf_counter()
        built = builder.build(sources, chunk_seed=0)
        alone = time.perf_counter() - start
        n = sum(len(b.pairs) for b in built)
        start = time.perf_counter()
        summary = run_build(cls(config), progress=False)
        total = time.perf_counter() - start
        print(f"{method:6} builder alone: {n / alone:>9,.0f} pairs/s   whole pipeline (read, validate, write "
              f"parquet + images): {summary.pairs_written / total:>7,.0f} pairs/s  ({summary.pairs_written} pairs)")


def feedback(world: Path, tmp: Path) -> None:
    import json

    from align.data import shapes_vocab
    from data_builders import builder_class
    from data_builders.base import run_build

    rows = [json.loads(line) for line in (world / "sources.jsonl").read_text().splitlines()]

    def wrong(caption: str, k: int) -> str:
        name = next(n for n in shapes_vocab.CLASSES if f" {n}" in caption)
        other = shapes_vocab.CLASSES[(shapes_vocab.CLASSES.index(name) + 1 + k) % len(shapes_vocab.CLASSES)]
        return caption.replace(f" {name}", f" {other}", 1)

    def rating(h: int, v: int) -> dict:
        return {a: {"Rating": str(r), "Rationale": "-"} for a, r in
                (("Helpfulness", h), ("Ethical Considerations", 5), ("Visual Faithfulness", v))}

    inputs = {
        "rlhfv": [{"id": r["id"], "images": r["images"], "original": wrong(r["caption"], 0),
                   "corrected": r["caption"]} for r in rows],
        "vlfeedback": [{"id": r["id"], "images": r["images"], "question": "Describe the image.",
                        "responses": [r["caption"]] + [wrong(r["caption"], k) for k in range(3)],
                        "ratings": [rating(5, 5), rating(4, 3), rating(4, 2), rating(2, 1)]} for r in rows],
        "rlaifv": [{"id": r["id"], "images": r["images"], "objects": r["objects"], "question": "Describe the image.",
                    "responses": [r["caption"]] + [wrong(r["caption"], k) for k in range(3)]} for r in rows],
        "hsa": [{"id": r["id"], "images": r["images"], "objects": r["objects"], "original": wrong(r["caption"], 0),
                 "corrected": r["caption"]} for r in rows],
        "hound": [{"id": r["id"], "images": [[r["images"][0]] * 4], "caption": r["caption"],
                   "responses": [r["caption"]] + [wrong(r["caption"], k) for k in range(3)]} for r in rows],
    }
    extra = {"rlaifv": {"labeler": "align.data.shapes_claims:labeler"},
             "hsa": {"judge": "align.data.shapes_claims:severity"},
             "hound": {"judge": "align.data.shapes_claims:caption_judge"}}
    for method, source_rows in inputs.items():
        path = world / f"{method}-sources.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in source_rows))
        cls = builder_class(method)
        start = time.perf_counter()
        config = cls.config_cls(method=method, input=str(path), out=str(tmp / method), **extra.get(method, {}))
        summary = run_build(cls(config), progress=False)
        total = time.perf_counter() - start
        print(f"{method:10} whole pipeline: {summary.rows_read / total:>7,.0f} source rows/s "
              f"({summary.pairs_written} pairs from {summary.rows_read} rows, images embedded)")


def corruptions() -> None:
    from PIL import Image

    from align.data.image_corruptions import apply_corruption

    images = [Image.new("RGB", (336, 336), (i % 255, 80, 160)) for i in range(64)]
    params = {"gaussian_noise": {"std": 0.1}, "diffusion_noise": {"t": 500}, "random_resized_crop": {},
              "color_jitter": {}, "downscale": {}, "blur": {}}
    for name, kwargs in params.items():
        apply_corruption(name, images[:4], seed=0, **kwargs)
        start = time.perf_counter()
        apply_corruption(name, images, seed=0, **kwargs)
        rate = len(images) / (time.perf_counter() - start)
        print(f"{name:20} {rate:>8,.0f} images/s at 336x336 (PIL in and out)")


def generation(tmp: Path) -> None:
    from PIL import Image

    from align.models.generate import Generator
    from align.models.tiny import build_tiny

    path = build_tiny("llava", tmp / "tiny-llava")
    gen = Generator(str(path), batch_size=16)
    convs = [[{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"Describe image {i}."}]}]
             for i in range(32)]
    images = [[Image.new("RGB", (64, 64), (i * 7 % 255, 90, 40))] for i in range(32)]
    new_tokens = 32

    def timed(batch_size: int) -> float:
        gen.batch_size = batch_size
        gen.model.generation_config.min_new_tokens = new_tokens  # equal lengths: a fair tokens/s comparison
        start = time.perf_counter()
        gen.generate(convs, images, max_new_tokens=new_tokens)
        return len(convs) * new_tokens / (time.perf_counter() - start)

    timed(16)
    batched, single = timed(16), timed(1)
    print(f"generation (tiny llava, 32 prompts x {new_tokens} tokens): batched(16) {batched:,.0f} tok/s, "
          f"one at a time {single:,.0f} tok/s, speed-up {batched / single:.1f}x")


def main() -> None:
    import torch

    from align.data.shapes import ShapesConfig, generate_shapes_world

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=2000, help="shapes images for the rule-based figures")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        generate_shapes_world(ShapesConfig(n=args.images, seed=0), tmp / "world")
        rule_based(tmp / "world", tmp)
        feedback(tmp / "world", tmp)
        corruptions()
        generation(tmp)


if __name__ == "__main__":
    main()
