"""Trainers: one per method, each beside its config dataclass."""
