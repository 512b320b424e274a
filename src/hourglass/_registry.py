"""One decorator registry per kind of component.

``@register_encoder("conv")`` adds a class; ``create_encoder("conv", ...)`` builds one. A duplicate name is an
error (as in torchvision; timm warns and overwrites, which hides bugs).
"""
from __future__ import annotations

from typing import Callable, Generic, TypeVar

from hourglass.errors import RegistryError, did_you_mean

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to classes for one kind of component ("encoder", "decoder", ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, type[T]] = {}

    def register(self, name: str) -> Callable[[type[T]], type[T]]:
        def add(cls: type[T]) -> type[T]:
            if name in self._items:
                raise RegistryError(
                    f'The {self.kind} name "{name}" is registered twice: by {self._items[name].__qualname__} '
                    f"and by {cls.__qualname__}. Give one of them another name."
                )
            self._items[name] = cls
            cls.registered_name = name  # type: ignore[attr-defined]
            return cls

        return add

    def get(self, name: str) -> type[T]:
        if name not in self._items:
            raise RegistryError(
                f'Unknown {self.kind} "{name}".{did_you_mean(name, self._items)} '
                f"Known {self.kind}s: {', '.join(sorted(self._items))}."
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: str) -> bool:
        return name in self._items


ENCODERS: Registry = Registry("encoder")
DECODERS: Registry = Registry("decoder")
BOTTLENECKS: Registry = Registry("bottleneck")
TASKS: Registry = Registry("task")
DATASETS: Registry = Registry("dataset")

register_encoder = ENCODERS.register
register_decoder = DECODERS.register
register_bottleneck = BOTTLENECKS.register
register_task = TASKS.register
register_dataset = DATASETS.register


def load_components() -> None:
    """Import every built-in component module so that each registers itself."""
    import hourglass.bottlenecks  # noqa: F401
    import hourglass.decoders  # noqa: F401
    import hourglass.encoders  # noqa: F401
    import hourglass.tasks  # noqa: F401
    import hourglass.data  # noqa: F401


def list_encoders() -> list[str]:
    load_components()
    return ENCODERS.names()


def list_decoders() -> list[str]:
    load_components()
    return DECODERS.names()
