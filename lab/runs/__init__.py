"""The run folder: its layout and files (metrics.json, error.json, config.yaml, checkpoints), read and written."""
