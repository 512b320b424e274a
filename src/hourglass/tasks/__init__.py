"""Tasks: each owns its losses, metrics and pictures, and registers itself with ``@register_task``."""
from hourglass.tasks import autoencoder, classification, vae, wae  # noqa: F401
from hourglass.tasks.base import Task  # noqa: F401
