"""`align dpo --variant V`: preference optimisation on TRL's DPOTrainer (config.py, trainer.py, variants.py)."""
