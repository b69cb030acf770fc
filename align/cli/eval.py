"""`align eval BENCH`: score answers (or generate them with a model first); `align eval compare RUN ...`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from align.cli._options import OverridesArg, OverwriteOpt
from align.eval import BENCHMARK_HELP, BENCHMARKS

app = typer.Typer(help="Hallucination benchmarks: score answers, or generate them with a model first; compare runs.",
                  no_args_is_help=True)

AnswersOpt = Annotated[Path | None, typer.Option("--answers", "-a", help="Answers JSONL to score.")]
QuestionsOpt = Annotated[Path | None, typer.Option("--questions", "-q", help="The benchmark's questions / ground "
                                                   "truth file.")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Generate the answers with this checkpoint.")]
AdapterOpt = Annotated[Path | None, typer.Option("--adapter", help="PEFT adapter applied to --model.")]
ImagesOpt = Annotated[Path | None, typer.Option("--images", help="Folder the questions' image paths resolve under "
                                                "(default: the questions file's folder).")]
OutOpt = Annotated[Path | None, typer.Option("--out", "-o", help="Run folder: answers.jsonl, metrics.json.")]
ModeOpt = Annotated[str, typer.Option("--mode", help="generate (text answers) or likelihood (yes/no questions: "
                                      "compare P(yes) with P(no)).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Questions per generation batch.")]
TokensOpt = Annotated[int, typer.Option("--max-new-tokens", help="Longest answer, in tokens.")]
PromptOpt = Annotated[str | None, typer.Option("--prompt", help="Prompt for rows without text (captioning).")]
SuffixOpt = Annotated[str, typer.Option("--suffix", help="Appended to every question, e.g. POPE's "
                                        "'\\nAnswer the question using a single word or phrase.'")]


def _command(bench: str):
    def run(
        answers: AnswersOpt = None,
        questions: QuestionsOpt = None,
        model: ModelOpt = None,
        adapter: AdapterOpt = None,
        images: ImagesOpt = None,
        out: OutOpt = None,
        mode: ModeOpt = "generate",
        batch_size: BatchOpt = 16,
        max_new_tokens: TokensOpt = 128,
        prompt: PromptOpt = None,
        suffix: SuffixOpt = "",
        overwrite: OverwriteOpt = False,
        overrides: OverridesArg = None,
    ) -> None:
        from align.eval.run import evaluate_benchmark
        from align.eval.runner import GenerationSettings

        generation = None
        if model is not None:
            generation = GenerationSettings(model=model, adapter=str(adapter) if adapter else None,
                                            image_root=str(images) if images else None, batch_size=batch_size,
                                            max_new_tokens=max_new_tokens, prompt=prompt,
                                            suffix=suffix.replace("\\n", "\n"), mode=mode)
        path = evaluate_benchmark(bench, answers=answers, questions=questions, out=out, generation=generation,
                                  overrides=overrides or [], overwrite=overwrite)
        typer.echo(f"metrics written to {path}")

    run.__doc__ = f"{BENCHMARK_HELP[bench]} Scores --answers, or generates them with --model first; key=value " \
                  "sets the benchmark's options."
    return run


for _name in BENCHMARKS:
    app.command(name=_name)(_command(_name))


@app.command(name="reward-pairs")
def reward_pairs(
    model: Annotated[Path, typer.Option("--model", "-m", help="Reward model folder written by `align reward`.")],
    pairs: Annotated[Path, typer.Option("--pairs", "-p", help="Preference records to score.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder for metrics.json.")],
    images: ImagesOpt = None,
    fact_captions: Annotated[Path | None, typer.Option("--fact-captions", help="The captions file a Fact-RLHF "
                                                       "model was trained with.")] = None,
    batch_size: BatchOpt = 16,
) -> None:
    """A reward model on preference pairs: accuracy (chosen strictly higher), mean margin, mean scores."""
    from align.eval.report import print_result, write_metrics
    from align.eval.reward_pairs import evaluate_reward_model

    result = evaluate_reward_model(model, pairs, images, fact_captions, batch_size)
    path = write_metrics(out, result, {"model": str(model), "pairs": str(pairs)})
    print_result(result)
    typer.echo(f"metrics written to {path}")


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (or metrics.json files) of one benchmark.")],
    png: Annotated[Path | None, typer.Option("--png", help="Bar chart to write (default: compare.png beside the "
                                             "first run).")] = None,
) -> None:
    """Print runs side by side and draw their headline metrics as a PNG bar chart."""
    from align.eval.report import compare_runs

    target = png or (runs[0].parent if runs[0].is_dir() else runs[0].parent.parent) / "compare.png"
    compare_runs(runs, png=target)
    typer.echo(f"chart written to {target}")
