"""`align sft`: supervised fine-tuning (settings.py, data.py, trainer.py, run.py)."""
