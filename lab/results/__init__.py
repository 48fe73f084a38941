"""Results: reading a sweep, its table, its plots, and the sweep status Hydra reports."""
