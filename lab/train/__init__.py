"""Training: fit then test, resume, DDP under Hydra, and rebuilding a run from its checkpoint."""
