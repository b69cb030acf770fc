"""Model loading, per-family part maps, trainable-part policies and tiny random checkpoints."""
