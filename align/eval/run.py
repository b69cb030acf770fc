"""One `align eval BENCH` run: answers (given, or generated with a model), scored, written and printed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from align.errors import ConfigError


def evaluate_benchmark(bench: str, answers: str | Path | None = None, questions: str | Path | None = None,
                       out: str | Path | None = None, generation=None, overrides: Sequence[str] = (),
                       show: bool = True, overwrite: bool = False) -> Path:
    """Score `answers` (or generate them into `out/answers.jsonl` with `generation`, a GenerationSettings) on
    benchmark `bench`; writes `out/metrics.json` (default out: `eval-<bench>` beside the answers) and returns it."""
    from align.eval import get_benchmark
    from align.eval.report import print_result, write_metrics
    from align.files import check_output_target

    evaluate = get_benchmark(bench)
    options = parse_options(overrides)
    if out is not None:
        check_output_target(out, overwrite)
    if (answers is None) == (generation is None):
        raise ConfigError("give either --answers FILE (score them) or --model PATH (generate them first)")
    if generation is not None:
        if questions is None:
            raise ConfigError("--model needs --questions FILE (the questions to answer)")
        if out is None:
            raise ConfigError("--model needs --out DIR (where answers.jsonl and metrics.json go)")
        from align.eval.runner import generate_answers

        answers = generate_answers(questions, Path(out) / "answers.jsonl", generation, progress=show)
    answers = Path(answers)
    out = Path(out) if out is not None else answers.parent / f"eval-{bench}"
    result = evaluate(answers, questions, **options)
    extra = {"answers": str(answers), "questions": str(questions) if questions else None, "options": options}
    if generation is not None:
        extra["model"] = generation.model
        extra["adapter"] = generation.adapter
        extra["mode"] = generation.mode
    path = write_metrics(out, result, extra)
    if show:
        print_result(result, title=f"{bench}: {answers}")
    return path


def parse_options(overrides: Sequence[str]) -> dict[str, str]:
    """key=value strings -> {key: value}; each benchmark coerces its own options."""
    options: dict[str, str] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, got '{item}'")
        options[key.strip()] = value
    return options
