"""Data modules: each registers itself with ``@register_dataset``."""
from hourglass.data import captions, images, mnist_captions, numbers, parallel, segmentation  # noqa: F401
