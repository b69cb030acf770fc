"""`align plan`: GPU memory of a training command from a model's config alone, without weights.

settings.py (the question and the `COMMANDS` registry), meta.py (configs: local, hub or built-in; parameter counts
from a meta-device build under the train policy), memory.py (model-state bytes per rank, pure arithmetic after
DeepSpeed's accounting), activations.py (the activation formula), planner.py (`make_plan`), report.py (table,
header). docs/planning.md explains the counting and its limits.
"""
