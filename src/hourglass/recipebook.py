"""The bundled recipes: commented YAML configs in ``hourglass/recipes/``."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml

from hourglass.config import Config, apply_overrides, read_yaml, validate
from hourglass.errors import ConfigError, did_you_mean

DEFAULT = "digits-ae"


def recipe_dir() -> Path:
    return Path(str(resources.files("hourglass") / "recipes"))


def recipes() -> dict[str, str]:
    """name -> one-line description, sorted by name."""
    out = {}
    for path in sorted(recipe_dir().glob("*.yaml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        out[path.stem] = str(raw.get("description", "")).strip().splitlines()[0] if raw.get("description") else ""
    return out


def resolve(spec: str | None) -> Path:
    """A recipe name or a YAML path -> the YAML file."""
    spec = spec or DEFAULT
    path = Path(spec)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"Config file {path} does not exist. Check the path, or run `hourglass recipes`.")
        return path
    candidate = recipe_dir() / f"{spec}.yaml"
    if not candidate.is_file() and "=" in spec:
        raise ConfigError(
            f'"{spec}" was read as the recipe, but it looks like a KEY=VALUE override. Overrides go right after '
            f"--set (`hourglass train RECIPE --set {spec} ...`); one that follows another option, such as --out "
            "DIR, is no longer part of --set. Move it next to the others, or give it a --set of its own."
        )
    if not candidate.is_file():
        names = list(recipes())
        raise ConfigError(
            f'"{spec}" is neither a config file nor a recipe.{did_you_mean(spec, names)} '
            f"Recipes: {', '.join(names)}. Run `hourglass recipes` for descriptions."
        )
    return candidate


def load(spec: str | None, overrides: list[str] = ()) -> Config:
    path = resolve(spec)
    raw = apply_overrides(read_yaml(path), list(overrides))
    return validate(raw, str(path), overrides)
