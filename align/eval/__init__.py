"""Hallucination benchmarks: one module of pure metric functions per benchmark (see align/eval/common.py).

`BENCHMARKS` maps each `align eval BENCH` name to its `evaluate` entry point ("module:function"), imported lazily
so listing them imports nothing heavy.
"""

from __future__ import annotations

from align.errors import lookup
from align.registry import import_object

BENCHMARKS: dict[str, str] = {
    "pope": "align.eval.pope:evaluate",
    "chair": "align.eval.chair:evaluate",
    "objhal": "align.eval.objhal:evaluate",
    "mme": "align.eval.mme:evaluate",
    "amber": "align.eval.amber:evaluate",
    "shapes-pope": "align.eval.shapes:evaluate_pope",
    "shapes-chair": "align.eval.shapes:evaluate_chair",
    "shapes-probes": "align.eval.shapes:evaluate_probes",
}

# One line per benchmark for `align eval --help`.
BENCHMARK_HELP: dict[str, str] = {
    "pope": "POPE yes/no object probing: accuracy, precision, recall, F1, yes-ratio per split (reference parser).",
    "chair": "CHAIR on COCO captions: CHAIR_i, CHAIR_s, Recall, Len (instances=, captions= annotation files).",
    "objhal": "Object HalBench, rule mode (ObjHal-rule): response- and mention-level hallucination rates.",
    "mme": "MME hallucination subset (existence, count, position, color): acc, acc+, score.",
    "amber": "AMBER: discriminative yes/no metrics and generative CHAIR, Cover, Hal, Cog.",
    "shapes-pope": "ShapesPOPE on a generated shapes world (text answers or yes/no likelihoods).",
    "shapes-chair": "ShapesCHAIR: CHAIR, Recall, colour/count/position errors, bait rate on the shapes world.",
    "shapes-probes": "Shapes-world existence/colour/count/relation probes: POPE, AMBER and MME metrics.",
}


def get_benchmark(name: str):
    """The `evaluate` function of benchmark `name` (an UnknownNameError lists the known ones)."""
    return import_object(lookup(BENCHMARKS, "benchmark", name))
