"""Datamodules. Each exposes num_classes, class_names, in_channels and image_size,
so models and the task size themselves from the data."""
