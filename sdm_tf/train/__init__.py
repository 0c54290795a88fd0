"""Training: input reader, fit loop, validation and early stopping, strategies, metrics."""
