"""Metrics torchmetrics does not have in the form lab's studies report."""
