"""Transfer learning: start a model's encoder (and optionally its bottleneck) from earlier weights, and freeze it.

``model.pretrained_encoder`` names the source of the weights:

- an hourglass run directory: its ``model.safetensors`` holds the whole EncoderDecoder (``encoder.*``,
  ``bottleneck.*``, ``decoder.*``); the run's config, stored in that file's header, names the source model in
  error messages;
- an hourglass ``model.safetensors`` or training checkpoint (``checkpoints/*.safetensors``) directly;
- a plain ``.safetensors`` file holding an encoder state dict, with or without the ``encoder.`` prefix (for
  example one exported from another framework and renamed).

``model.pretrained_parts`` says which parts are loaded, and frozen by ``model.freeze_encoder``: ``["encoder"]``
(the default) or ``["encoder", "bottleneck"]``. The choice is explicit, never guessed from matching names or
shapes: a plain autoencoder's useful code is the bottleneck's output (its encoder's vector is a large flattened
feature map), so a probe on an autoencoder should take both; a classifier that wants the encoder's features
and learns its own projection takes only the encoder. The parts loaded and the parts frozen are the same list
so that "the pretrained part" means one thing.

Files are read with safetensors only, never unpickled: a ``.pt`` / ``.ckpt`` / ``.bin`` file is refused. Weights
whose names or shapes differ from the model are refused with a :class:`CheckpointError` that lists them.
"""
from __future__ import annotations

import json
from pathlib import Path

from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import Tensor

from hourglass.checkpoint import FORMAT as CHECKPOINT_FORMAT
from hourglass.checkpoint import load_tree
from hourglass.config import ModelConfig
from hourglass.errors import CheckpointError, ConfigError
from hourglass.model import EncoderDecoder
from hourglass.weights import MODEL_FORMAT, check_checksum, mismatches

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")
PARTS = ("encoder", "bottleneck", "decoder")


def parts_of(cfg: ModelConfig) -> tuple[str, ...]:
    """The validated ``pretrained_parts`` in model order: ("encoder",) or ("encoder", "bottleneck")."""
    parts = tuple(p for p in ("encoder", "bottleneck") if p in cfg.pretrained_parts)
    if "encoder" not in parts:
        raise ConfigError(
            f"model.pretrained_parts is {list(cfg.pretrained_parts)}, but it must include \"encoder\": the "
            'pretrained part is the start of the model. Use ["encoder"] or ["encoder", "bottleneck"].'
        )
    return parts


def prepare_encoder(model: EncoderDecoder, cfg: ModelConfig, *, load: bool = True) -> tuple[str, ...]:
    """Load ``cfg.pretrained_parts`` from ``cfg.pretrained_encoder`` (when ``load``) and freeze them when
    ``cfg.freeze_encoder``; return the parts touched. ``load=False`` rebuilds a trained run, whose own weights
    replace these anyway (so the source need not exist any more)."""
    parts = parts_of(cfg)
    if cfg.pretrained_encoder and load:
        load_parts(model, cfg.pretrained_encoder, parts)
    if cfg.freeze_encoder:
        model.freeze(parts)
    return parts


def load_parts(model: EncoderDecoder, source: str | Path, parts: tuple[str, ...]) -> None:
    """Copy the weights of ``parts`` from ``source`` into ``model``, after checking every name and shape."""
    state, origin, described = read_source(Path(source))
    by_part = split_parts(state, parts, origin)
    problems = []
    for part in parts:
        expected = getattr(model, part).state_dict()
        diff = mismatches(expected, by_part[part], limit=12)
        problems += [_qualified(part, line) for line in diff]
    if problems:
        mine = " -> ".join(model.names[p] for p in parts)
        raise CheckpointError(
            f"{origin} does not fit this model's {' and '.join(parts)} ({mine}){described}: "
            f"{'; '.join(problems)}. Use the same model.encoder{' and model.bottleneck' if len(parts) > 1 else ''} "
            "settings as the run that made the weights, or another source."
        )
    for part in parts:
        getattr(model, part).load_state_dict(by_part[part])


def _qualified(part: str, line: str) -> str:
    """A line of weights.mismatches with the tensor name given in full ("encoder.stages.0...")."""
    for word in ("missing ", "unexpected "):
        if line.startswith(word):
            return f"{word}{part}.{line[len(word):]}"
    return line if line.startswith("...") else f"{part}.{line}"


def read_source(path: Path) -> tuple[dict[str, Tensor], Path, str]:
    """(state dict, the file it came from, a description of the source model or "")."""
    if path.is_dir():
        file = path / "model.safetensors"
        if not file.is_file():
            raise CheckpointError(
                f"model.pretrained_encoder={path} is a folder without model.safetensors, so it is not a finished "
                "hourglass run. Give the directory `hourglass train` printed, or a .safetensors file."
            )
        path = file
    if path.suffix in PICKLE_SUFFIXES:
        raise CheckpointError(
            f"model.pretrained_encoder={path} looks like a pickled PyTorch file; hourglass never unpickles weights "
            "(a pickle can run any code). Convert it once to safetensors (safetensors.torch.save_file of the "
            "encoder's state dict) and point at that file."
        )
    if not path.is_file():
        raise CheckpointError(
            f"model.pretrained_encoder={path} does not exist. Train the run it names first (for the "
            "mnist-pretrain-probe recipe: `hourglass train mnist-ae --out runs/mnist-ae`), or point at another "
            "run directory or .safetensors file with --set model.pretrained_encoder=PATH."
        )
    meta = _metadata(path)
    if meta.get("format") == CHECKPOINT_FORMAT:  # a training checkpoint: the task's state dict, "model.*"
        tree = load_tree(path)
        state = {k[len("model."):]: v for k, v in tree["state_dict"].items() if k.startswith("model.")}
        return state, path, ""
    check_checksum(path, "Restore it from a copy of the run, or train that run again.")
    state = load_file(str(path))
    described = ""
    if meta.get("format") == MODEL_FORMAT and "config" in meta:
        model_cfg = json.loads(meta["config"]).get("model", {})
        described = " (the source was trained with " + ", ".join(
            f'{p} {_component(model_cfg.get(p))}' for p in ("encoder", "bottleneck") if model_cfg.get(p)) + ")"
    return state, path, described


def _component(section: dict) -> str:
    options = {k: v for k, v in section.items() if k != "name"}
    return f'"{section.get("name")}"' + (f" {json.dumps(options)}" if options else "")


def _metadata(path: Path) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path} is not a readable safetensors file ({err}). Re-export it, or give a run "
                              "directory.") from None


def split_parts(state: dict[str, Tensor], parts: tuple[str, ...], origin: Path) -> dict[str, dict[str, Tensor]]:
    """Whole-model keys ("encoder.x", "bottleneck.y") -> one state dict per part. A state dict without those
    prefixes is a bare encoder's."""
    if not any(k.split(".", 1)[0] in PARTS for k in state):
        if "bottleneck" in parts:
            raise CheckpointError(
                f"{origin} holds a bare encoder state dict (no \"encoder.\" / \"bottleneck.\" prefixes), so it has "
                'no bottleneck weights to load. Set model.pretrained_parts=["encoder"], or give a whole hourglass run.'
            )
        return {"encoder": dict(state)}
    out = {p: {k[len(p) + 1:]: v for k, v in state.items() if k.startswith(p + ".")} for p in parts}
    for part in parts:
        if not out[part]:
            raise CheckpointError(f"{origin} holds no {part} weights (no \"{part}.*\" tensors). Check the file, or "
                                  f"leave {part} out of model.pretrained_parts.")
    return out
