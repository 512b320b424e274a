"""Typed, validated configs.

The config tree mirrors the object tree: ``data``, ``model.encoder``, ``model.bottleneck``, ``model.decoder``,
``task``, ``train`` and ``trainer``. Fixed sections are pydantic models with ``extra="forbid"``. Component
sections (``{name: ..., <options>}``) are validated against the registered class's keyword-only constructor,
so the constructor is the single source of truth for a component's options (see :mod:`hourglass.options`).
Every error is a :class:`ConfigError` that names the source file and the dotted key, and suggests the
closest valid key.
"""
from __future__ import annotations

from collections.abc import Hashable
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from hourglass.errors import ConfigError, did_you_mean
from hourglass.limits import MAX_SEED


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class Component(BaseModel):
    """``name`` plus options; the options are checked against the registered class by the builder."""

    model_config = ConfigDict(extra="allow")
    name: str

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ModelConfig(Strict):
    encoder: Component
    bottleneck: Component = Field(default_factory=lambda: Component(name="none"))
    decoder: Component
    # A run directory or .safetensors file to load encoder weights from, and whether to freeze them.
    pretrained_encoder: Optional[str] = None
    freeze_encoder: bool = False
    # The parts that pretrained_encoder loads and freeze_encoder freezes: ["encoder"] or ["encoder",
    # "bottleneck"] (a plain autoencoder's code is the bottleneck's output). See hourglass.pretrained.
    pretrained_parts: list[Literal["encoder", "bottleneck"]] = Field(default_factory=lambda: ["encoder"])


class EarlyStopping(Strict):
    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    patience: int = Field(default=5, ge=1)
    min_delta: float = 0.0


class TrainConfig(Strict):
    max_epochs: int = Field(default=20, ge=1)
    max_steps: int = -1
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(default=1e-3, gt=0, le=1e3)  # above 1e3 only a typo; 1e39 overflows the optimizer
    weight_decay: float = Field(default=0.0, ge=0)
    scheduler: Literal["none", "cosine", "inverse_sqrt", "linear_warmup"] = "none"
    warmup_steps: int = Field(default=0, ge=0)
    gradient_clip: Optional[float] = Field(default=None, ge=0, allow_inf_nan=False)  # 0 or null: no clipping
    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    early_stopping: Optional[EarlyStopping] = None
    checkpoint_every_n_steps: int = Field(default=100, ge=1)
    average_last: int = Field(default=0, ge=0)
    progress: bool = True
    # With model.freeze_encoder: compute the frozen parts' codes once, store them in the run directory and
    # train the rest from them (hourglass.features).
    cache_features: bool = False


class TrainerConfig(BaseModel):
    """Passed through to ``lightning.Trainer``; any extra key must be a Trainer argument."""

    model_config = ConfigDict(extra="allow")
    accelerator: str = "cpu"
    devices: Union[int, str, list[int]] = 1
    strategy: str = "auto"
    num_nodes: int = 1
    precision: Union[int, str] = "32-true"
    log_every_n_steps: int = 10
    deterministic: bool = False


#: A run's name starts the folder ``runs/NAME-DATE`` when no --out is given: one path part, not an option.
RUN_NAME = r"^[A-Za-z0-9_][A-Za-z0-9._+-]*$"


class Config(Strict):
    name: str = Field(default="run", pattern=RUN_NAME, max_length=100)  # no "/", "..", leading "-" or empty
    description: str = ""
    seed: int = Field(default=0, ge=0, le=MAX_SEED)  # numpy's and Lightning's range
    data: Component
    model: ModelConfig
    task: Component
    train: TrainConfig = Field(default_factory=TrainConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def parse_value(text: str) -> Any:
    """A --set value, read as YAML so that numbers, booleans, lists and null keep their types."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str = "--set") -> dict[str, Any]:
    """Apply ``KEY=VALUE`` strings (dotted keys) to a raw config dict, in place, and return it."""
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f'{source}: "{item}" is not KEY=VALUE. Write it as, for example, --set train.lr=0.001.')
        node = raw
        parts = key.strip().split(".")
        if not all(part.strip() for part in parts):
            raise ConfigError(f'{source}: the key "{key}" has an empty part (two dots in a row, or a dot at an end). '
                              'Write each part once, for example --set data.path=...')
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                path = ".".join(parts[: i + 1])
                raise ConfigError(f'{source}: cannot set "{key}" because "{path}" is a value, not a section.')
            node = child
        node[parts[-1]] = parse_value(value)
    return raw


def _keys_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The valid field names of the section at ``loc`` (for "did you mean")."""
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None) if field else None
        ann = next((a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type)), ann)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def _elsewhere(leaf: str, raw: dict[str, Any]) -> list[str]:
    """The dotted keys, in other sections, that take the option ``leaf``: the fixed sections' fields, and the
    options of the dataset and task that ``raw`` names (their classes' keyword arguments)."""
    found = [f"{section}.{leaf}" for section, model in (("train", TrainConfig), ("model", ModelConfig),
                                                          ("trainer", TrainerConfig)) if leaf in model.model_fields]
    from hourglass._registry import DATASETS, TASKS, load_components  # late: the registries import the config
    from hourglass.options import parameters

    load_components()
    for section, registry in (("data", DATASETS), ("task", TASKS)):
        part = raw.get(section)
        name = part.get("name") if isinstance(part, dict) else None
        if name in registry.names() and leaf in parameters(registry.get(name)):
            found.append(f"{section}.{leaf}")
    return found


def _hint(loc: tuple, raw: dict[str, Any]) -> str:
    """A "did you mean" for an unknown key: a close name in its section, else the same name in another."""
    hint = did_you_mean(str(loc[-1]), _keys_at(Config, loc))
    if hint or len(loc) != 2:
        return hint
    try:
        others = _elsewhere(str(loc[-1]), raw)
    except Exception:  # a hint must never hide the error it is for
        others = []
    quoted = " or ".join(f'"{key}"' for key in others)
    return f" Did you mean {quoted}?" if others else ""


def config_error(err: ValidationError, source: str, raw: dict[str, Any] | None = None,
                 given: tuple[str, ...] = ()) -> ConfigError:
    """Turn pydantic's report into one paragraph per problem; a key set with ``--set`` (``given``) is said so."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            hint = _hint(e["loc"], raw or {})
            origin = " (given with --set)" if key in given else ""
            lines.append(f'unknown key "{key}"{origin}.{hint} Remove it or fix its spelling.')
        elif e["type"] == "missing":
            lines.append(f'the key "{key}" is required but missing. Add it to the config.')
        else:
            lines.append(f'"{key}" has a wrong value {e["input"]!r}: {e["msg"]}. Fix its type or value.')
    return ConfigError(f"Config {source}: " + " Also, ".join(lines))


def validate(raw: dict[str, Any], source: str, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """``raw`` (read from ``source``, with the ``--set`` ``overrides`` applied) -> a checked Config."""
    if not isinstance(raw, dict):
        raise ConfigError(f"Config {source}: the top level must be a mapping of sections (data, model, task, ...).")
    try:
        return Config.model_validate(raw)
    except ValidationError as err:
        given = tuple(item.partition("=")[0].strip() for item in overrides)
        raise config_error(err, source, raw, given) from None


def _text(path: Path) -> str:
    """A config file's text: UTF-8, or UTF-16 with its byte-order mark (what Windows PowerShell's ``>`` writes)."""
    data = path.read_bytes()
    encoding = "utf-16" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-8-sig"
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ConfigError(f"Config file {path} is not {encoding.replace('-sig', '')} text: byte {err.start} (line "
                          f"{line}) cannot be decoded. Save the file as UTF-8.") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key that a mapping repeats: PyYAML keeps the last one silently, so a second
    ``model:`` section replaced the first without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` merges; what follows may override it
                continue
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, Hashable):  # PyYAML refuses it below, in its own words
                continue
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f'the key "{key}" appears twice, on lines {seen[key]} and {line}: keep one of them '
                    "(YAML would silently use the last)", key_node.start_mark)
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.load(_text(path), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except FileNotFoundError:
        raise ConfigError(f"Config file {path} does not exist. Check the path, or run `hourglass recipes`.") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"Config file {path} is not valid YAML: {err}. Fix the syntax at that line.") from None
    return raw or {}


def load_config(path: Path, overrides: list[str] = ()) -> Config:
    raw = apply_overrides(read_yaml(path), list(overrides))
    return validate(raw, str(path), overrides)


def save_config(config: Config, path: Path) -> None:
    from hourglass.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.to_dict(), sort_keys=False))
