"""Experiments over many runs: sweeps of (variant, seed), their results tables and statistics."""
