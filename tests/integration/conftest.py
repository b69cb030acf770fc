"""Fixtures of the integration tests: preference pairs built once per session from the shapes world."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def pairs(shapes_world, tmp_path_factory):
    """Folder with halva pairs (spans included, plus HSA severity scores) as JSONL files: all.jsonl, fixed.jsonl
    (2 rows), and broken ones (row 2 of each): nospans, badspans, unequal (halva: more chosen than rejected
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
