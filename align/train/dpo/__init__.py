"""`align dpo --variant V`: preference optimisation on TRL's DPOTrainer (settings.py, data.py, trainer.py, run.py;
each variant in variants/)."""
