"""Data modules: each registers itself with ``@register_dataset``."""
from hourglass.data import images  # noqa: F401
