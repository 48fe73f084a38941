"""Image retrieval: encode a gallery, search it exactly, evaluate it (python -m lab.retrieve)."""
