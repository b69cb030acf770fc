"""Errors meant for people: the CLI prints `error: <message>` on one line and exits with code 2.

Every message names what is wrong and where (file, row, field or key) and, where there is one, the fix.
"""

from __future__ import annotations


class AlignError(Exception):
    """Base class: anything the user can fix by changing input, flags or configuration."""

    exit_code = 2


class ConfigError(AlignError):
    """A recipe, flag or `key=value` override that does not fit the config dataclass."""

    def __init__(self, problems: list[str] | str, source: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        prefix = f"{source}: " if source else ""
        if len(self.problems) == 1:
            message = prefix + self.problems[0]
        else:
            message = prefix + f"{len(self.problems)} problems: " + "; ".join(self.problems)
        super().__init__(message)


class DataError(AlignError):
    """A dataset file, row or field that breaks the data contract."""

    def __init__(self, path: object, problem: str, row: int | None = None, field: str | None = None):
        self.path, self.problem, self.row, self.field = str(path), problem, row, field
        where = self.path
        if row is not None:
            where += f", row {row}"
        if field is not None:
            where += f", field '{field}'"
        super().__init__(f"{where}: {problem}")


class ModelError(AlignError):
    """A model path, family or checkpoint that cannot be loaded or built."""


class RewardError(AlignError):
    """A reward function or reward model that fails during RL training: it raised, returned the wrong number of
    rewards, or returned a value that is not a finite number."""


class UnknownNameError(AlignError):
    """A name looked up in a registry (family, builder, variant, benchmark) that is not there."""

    def __init__(self, kind: str, name: str, known: object):
        known_list = ", ".join(sorted(known))
        super().__init__(f"unknown {kind} '{name}'; known: {known_list}")


def lookup(registry: dict, kind: str, name: str):
    """`registry[name]`, or an UnknownNameError that lists the known names."""
    try:
        return registry[name]
    except KeyError:
        raise UnknownNameError(kind, name, registry) from None
