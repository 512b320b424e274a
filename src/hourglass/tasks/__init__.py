"""Tasks: each owns its losses, metrics and pictures, and registers itself with ``@register_task``."""
from hourglass.tasks import autoencoder, classification, segmentation, seq2seq, vae, wae  # noqa: F401
from hourglass.tasks.base import Task  # noqa: F401
