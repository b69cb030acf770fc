"""`align quickstart`: the whole pipeline on a generated shapes world with a tiny model (see pipeline.py)."""
