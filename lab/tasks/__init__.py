"""LightningModules: the loss, the metrics and the optimizer/scheduler wiring of a task."""
