"""How a `MemoryPlan` is shown: one header line and a rich table of bytes per GPU (and per rank in CPU memory)."""

from __future__ import annotations

from align.plan.memory import GIB, StateBytes
from align.plan.planner import TERMS, MemoryPlan


def billions(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e8 else f"{n / 1e6:.1f}M"


def gib(n: int) -> str:
    return f"{n / GIB:,.2f} GiB" if n else "-"


def header(plan: MemoryPlan) -> str:
    s = plan.settings
    command = s.command + (f" --variant {s.variant}" if s.variant else "")
    checkpointing = "on" if s.gradient_checkpointing else "off"
    return (f"{s.model} ({plan.family}, {plan.source}): {billions(plan.parameters)} parameters, "
            f"{billions(plan.trainable_parameters)} trainable ({plan.policy}); {command}; {plan.zero.label} over "
            f"{s.gpus} GPU{'s' if s.gpus > 1 else ''}; micro-batch {s.micro_batch} x {s.seq_len} tokens, {s.dtype}, "
            f"gradient checkpointing {checkpointing}")


def _how(plan: MemoryPlan, key: str) -> str:
    """A short note saying how a row was counted."""
    s, zero = plan.settings, plan.zero
    per = StateBytes.for_dtype(s.dtype)
    over = f" / {s.gpus}"
    trainable = plan.models["policy"]["trainable"]
    if key == "trainable_weights":
        return f"{billions(trainable)} x {per.weights} B" + (over if zero.stage == 3 else "")
    if key == "gradients":
        return f"{billions(trainable)} x {per.gradients} B" + (over if zero.stage >= 2 else "")
    if key == "optimizer_states":
        return f"{billions(trainable)} x {per.optimizer} B" + (over if zero.stage >= 1 else "")
    if key == "frozen_weights":
        frozen = plan.models["policy"]["total"] - trainable
        return f"{billions(frozen)} x {per.weights} B" + (over if zero.stage == 3 else "")
    if key == "gathered_layer":
        return "largest layer, whole"
    if key in ("reference_model", "reward_model"):
        n = plan.models["reference" if key == "reference_model" else "reward_model"]
        return f"{billions(n)} x {per.weights} B, frozen" + (over if zero.stage == 3 else "")
    if key == "critic":
        critic = plan.models["critic"]
        return f"{billions(critic['total'])}, {billions(critic['trainable'])} trainable ({critic['train']})"
    return ""


def plan_table(plan: MemoryPlan):
    from rich.table import Table

    s = plan.settings
    table = Table(title=f"memory per GPU (estimate; {s.gpu_memory:g} GiB GPUs)", title_justify="left")
    table.add_column("part")
    table.add_column("GPU", justify="right")
    table.add_column("CPU (per rank)", justify="right")
    table.add_column("how")
    for key, label in TERMS.items():
        place = plan.placements[key]
        if key == "activations":
            _activation_rows(table, plan)
            continue
        if place.gpu or place.cpu or key in ("trainable_weights", "gradients", "optimizer_states"):
            table.add_row(label, gib(place.gpu), gib(place.cpu), _how(plan, key))
    table.add_section()
    table.add_row("total", gib(plan.per_rank_bytes["total"]), gib(plan.cpu_bytes["total"]), "", style="bold")
    fit = plan.largest_micro_batch
    table.add_row("largest micro-batch", str(fit), "",
                  f"within {s.gpu_memory:g} GiB" if fit else f"does not fit in {s.gpu_memory:g} GiB", style="bold")
    return table


def _activation_rows(table, plan: MemoryPlan) -> None:
    """The selected figure as "activations", the other one dimmed below it, outside the total."""
    s = plan.settings
    for checkpointing in (s.gradient_checkpointing, not s.gradient_checkpointing):
        parts = plan.activations["with_checkpointing" if checkpointing else "without_checkpointing"]
        chosen = checkpointing == s.gradient_checkpointing
        mode = f"checkpointing {'on' if checkpointing else 'off'}"
        bits = [mode if chosen else "not in the total", f"{s.micro_batch} x {s.rows} seq"]
        bits += [f"{name} {gib(parts[name] * s.micro_batch)}" for name in ("vision", "logits") if parts[name]]
        table.add_row("activations" if chosen else f"({mode})", gib(parts["total"] * s.micro_batch), "",
                      ", ".join(bits), style=None if chosen else "dim")


def print_plan(plan: MemoryPlan) -> None:
    from rich.console import Console

    console = Console()
    console.print(header(plan), highlight=False)
    console.print(plan_table(plan))
    for note in plan.notes + ["an estimate: fragmentation, temporary buffers, communication buckets and the CUDA "
                              "context are not counted (docs/planning.md)"]:
        console.print(f"note: {note}", highlight=False)
