"""ImageNet's per-channel mean and std, in a module without torch so that CLIs import it cheaply."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
