"""Bottlenecks: each module registers itself with ``@register_bottleneck``."""
from hourglass.bottlenecks import plain, variational  # noqa: F401
from hourglass.bottlenecks.base import Bottleneck  # noqa: F401
