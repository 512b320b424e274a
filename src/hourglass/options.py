"""Validate a component's config options against its keyword-only constructor, then build it.

Context arguments (``input_shape``, ``vocab_size``, ``code``, ...) come from the data and the encoder, not from
the user: setting one in a config is an error, and so is an option the constructor does not take (no
``**kwargs`` catch-all swallows a typo).
"""
from __future__ import annotations

import inspect
import os
import types
import typing
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError

from hourglass._registry import DATASETS, Registry
from hourglass.errors import ConfigError, did_you_mean

#: Option types with limits, checked when a config is read (the string is what an error message shows).
Size = Annotated[int, Field(ge=1), "a whole number of at least 1"]
Count = Annotated[int, Field(ge=0), "a whole number, 0 or more"]
Positive = Annotated[float, Field(gt=0, allow_inf_nan=False), "a finite number greater than 0"]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False), "a finite number, 0 or more"]
#: A dropout rate or a label-smoothing mass: torch refuses 1 and more only when the layer is built or first run.
Probability = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False), "a number from 0 up to, not including, 1"]
Widths = Annotated[list[Size], Field(min_length=1), "a non-empty list of whole numbers of at least 1, e.g. [32, 64]"]
Hidden = Annotated[list[Size], "a list of whole numbers of at least 1 (empty for none), e.g. [256]"]

#: A file or folder option. A run directory stores it absolute (``absolute_paths``), so the run can be used
#: from any working directory.
LOCATION = "a file or folder path"
Location = Annotated[str, LOCATION]

#: Arguments the builder supplies; never user options.
CONTEXT = frozenset({"input_shape", "output_shape", "vocab_size", "pad_id", "shared_vocab", "code", "num_classes",
                     "seed", "model", "train"})


def parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The keyword arguments of ``cls.__init__`` (without ``self``)."""
    sig = inspect.signature(cls.__init__)
    return {n: p for n, p in sig.parameters.items() if n != "self" and p.kind is not p.VAR_KEYWORD}


def user_options(cls: type) -> dict[str, Any]:
    """Option name -> default, for documentation and ``hourglass info``."""
    return {n: p.default for n, p in parameters(cls).items() if n not in CONTEXT}


def check_options(cls: type, options: dict[str, Any], where: str) -> dict[str, Any]:
    """Return ``options`` coerced to the constructor's annotated types, or raise ConfigError."""
    params = parameters(cls)
    hints = typing.get_type_hints(cls.__init__, include_extras=True)
    valid = [n for n in params if n not in CONTEXT]
    out = {}
    for key, value in options.items():
        if key in CONTEXT:
            raise ConfigError(f'"{where}.{key}" is set by hourglass from the data and the encoder; remove it from the config.')
        if key not in params:
            raise ConfigError(
                f'Unknown option "{where}.{key}" for {cls.__name__}.{did_you_mean(key, valid)} '
                f"Valid options: {', '.join(valid) or 'none'}."
            )
        out[key] = _coerce(hints.get(key, Any), value, f"{where}.{key}")
    return out


def _coerce(annotation: Any, value: Any, key: str) -> Any:
    try:
        return TypeAdapter(annotation).validate_python(value)
    except ValidationError as err:
        msg = err.errors()[0]["msg"]  # a Literal's message already lists the choices
        must = "" if typing.get_origin(annotation) is Literal else f" It must be {_show(annotation)}."
        raise ConfigError(f'"{key}" has a wrong value {value!r}: {msg}.{must}') from None


def _show(annotation: Any) -> str:
    """A readable name of an option's type: "one of 'a', 'b'", the text an Annotated limit carries, or the type."""
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(repr(v) for v in typing.get_args(annotation))
    if origin is Annotated:
        return next((m for m in annotation.__metadata__ if isinstance(m, str)), _show(typing.get_args(annotation)[0]))
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _show(args[0]) + " or null"
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def absolute_paths(cls: type, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with each relative ``Location`` that exists from here made absolute."""
    hints = typing.get_type_hints(cls.__init__, include_extras=True)
    out = dict(options)
    for key, value in options.items():
        if not isinstance(value, str) or value in getattr(cls, "builtin_names", ()):
            continue  # lists, numbers, built-in data names
        relative = not os.path.isabs(value)
        if relative and _is_location(hints.get(key)) and os.path.exists(value):
            out[key] = os.path.abspath(value)
    return out


def absolute_data_paths(config: Any) -> Any:
    """A :class:`~hourglass.config.Config` with its relative data paths that exist from here made absolute."""
    opts = absolute_paths(DATASETS.get(config.data.name), config.data.options())
    return config.model_copy(update={"data": config.data.model_copy(update=opts)})


def _is_location(annotation: Any) -> bool:
    if typing.get_origin(annotation) is Annotated:
        return LOCATION in annotation.__metadata__
    return any(_is_location(a) for a in typing.get_args(annotation))


def build(registry: Registry, name: str, options: dict[str, Any], context: dict[str, Any], where: str) -> Any:
    """Create ``registry[name]`` with validated ``options`` plus the context arguments it declares."""
    cls = registry.get(name)
    kwargs = check_options(cls, options, where)
    params = parameters(cls)
    for key in params:
        if key in CONTEXT and key in context:
            kwargs[key] = context[key]
    missing = [k for k, p in params.items() if p.default is p.empty and k not in kwargs]
    if missing:
        raise ConfigError(f'{where} "{name}" needs {", ".join(missing)}, which this data does not provide.')
    return cls(**kwargs)
