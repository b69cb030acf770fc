"""The `align` command: assembles the sub-commands and turns AlignError into one line + exit code 2.

Nothing heavy is imported here (torch, transformers, trl): each command imports what it needs inside its body,
so `align --help` answers at once.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from align import __version__
from align.cli import (
    build_pairs,
    data,
    dpo,
    eval,
    grpo,
    iterate,
    models,
    plan,
    ppo,
    quickstart,
    reward,
    sft,
    validate,
)

app = typer.Typer(
    name="align",
    help="Preference alignment of multimodal LLMs against hallucination: build pairs, SFT, DPO variants, "
    "reward/PPO/GRPO, hallucination benchmarks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"align {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks instead of one-line errors.")] = False,
) -> None:
    _state["debug"] = debug


app.add_typer(data.app, name="data")
app.add_typer(models.app, name="models")
app.add_typer(eval.app, name="eval")
app.command(name="build-pairs")(build_pairs.build_pairs)
app.command(name="sft")(sft.sft)
app.command(name="dpo")(dpo.dpo)
app.command(name="reward")(reward.reward)
app.command(name="ppo")(ppo.ppo)
app.command(name="grpo")(grpo.grpo)
app.command(name="iterate")(iterate.iterate)
app.command(name="validate")(validate.validate)
app.command(name="quickstart")(quickstart.quickstart)
app.command(name="plan")(plan.plan)


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


def without_local_rank(args: list[str]) -> list[str]:
    """`args` without the `--local_rank=N` (or `--local-rank N`) that the `deepspeed` launcher and the legacy
    `torch.distributed.launch` append to a script's arguments; the rank is also in LOCAL_RANK, where align reads it."""
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg.startswith(("--local_rank=", "--local-rank=")):
            continue
        elif arg in ("--local_rank", "--local-rank"):
            skip = True
        else:
            kept.append(arg)
    return kept


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (also `python -m align`)."""
    from align.errors import AlignError

    args = without_local_rank(list(sys.argv[1:] if argv is None else argv))
    try:
        app(args=args, prog_name="align")
    except AlignError as exc:
        if _state["debug"] or "--debug" in args:
            raise
        sys.stderr.write(f"error: {_one_line(exc)}\n")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        if _state["debug"] or "--debug" in args:
            raise
        sys.stderr.write("error: interrupted\n")
        sys.exit(130)
    finally:
        from align.distributed import end_process_group

        end_process_group()
