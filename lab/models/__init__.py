"""Models: plain nn.Modules sized from the data (in_channels, num_classes, image_size)."""
