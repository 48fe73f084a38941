"""Small helpers shared by the entry points (no torch at import time)."""
