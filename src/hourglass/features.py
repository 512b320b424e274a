"""The feature cache: with a frozen encoder, compute its codes once and train the rest of the model from them.

``train.cache_features: true`` (with ``model.freeze_encoder: true``) runs the frozen parts (``model.frozen``:
the encoder, or the encoder and the bottleneck) once over the training and validation data, stores what the
rest of the model reads in ``<run>/feature_cache.safetensors``, and wraps the data module in a
:class:`FeatureCache`. Its batches are the data module's own with the first element, the encoder input,
replaced by a :class:`~hourglass.model.CachedCode`; ``EncoderDecoder.encode`` then runs only the parts after the
cached ones, so a task needs no code of its own for the cache. It only has to declare that it reads the first
batch element solely through ``model.encode`` (``Task.encodes_input_only``): an autoencoder also reads it
as the reconstruction target, so the autoencoder family cannot use the cache.

Batches come in the same order as without the cache: the cached loader reuses the data module's own batch
sampler (and so its shuffling, its resume position and its batch sizes) and looks the codes up by example
index. Training from the cache therefore sees the same codes, in the same batches, as training through the
frozen encoder, and reaches the same weights up to float rounding.

When cached codes would be wrong, the cache refuses to start:

- the parts before the cache must be frozen. A frozen part is kept in eval mode (``EncoderDecoder.train``), so
  dropout is off and a frozen variational bottleneck gives its mean both with and without the cache. A
  variational bottleneck that is not frozen runs live after the cache and keeps sampling; either way the cache
  is exact. What is checked is the outcome: the frozen parts must give identical codes for the same batch twice;
- the inputs must be the same every epoch: a data module that augments (``augments = True``, or a truthy data
  option whose name contains "augment") is refused, and so is a task that reads anything but codes.

Only the Code fields the rest of the model reads are stored (the decoder's ``needs``, plus ``vector`` when a
bottleneck still runs, and a posterior when there is one), so a conv encoder's multi-scale feature maps are
not kept for a classifier head. Token memories of different lengths are padded to the longest and trimmed back
to each batch's longest row (``memory_mask`` marks the real positions). The file is reused on resume when its
fingerprint (frozen weights, data config and parts) matches, and rebuilt otherwise.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from hourglass.code import Code, Posterior
from hourglass.config import Config
from hourglass.data.base import DataModule
from hourglass.errors import ConfigError, TrainingError
from hourglass.io import atomic_write
from hourglass.model import CachedCode, EncoderDecoder

CACHE_FILE = "feature_cache.safetensors"
FORMAT = "hourglass-feature-cache-1"
SPLITS = ("train", "val")


def cached_data(config: Config, task: Any, data: DataModule, run_dir: Path) -> "FeatureCache":
    """The data module to fit on when ``train.cache_features`` is set (checked here, built lazily at setup)."""
    model: EncoderDecoder = task.model
    if not config.model.freeze_encoder or "encoder" not in model.frozen:
        raise ConfigError(
            "train.cache_features needs a frozen encoder: set model.freeze_encoder=true (with "
            "model.pretrained_encoder to start from trained weights). A trained encoder changes every step, "
            "so its codes cannot be computed once."
        )
    if not getattr(task, "encodes_input_only", False):
        raise ConfigError(
            f'train.cache_features cannot serve task "{config.task.name}": it reads its input for more than '
            "model.encode (an autoencoder also compares its output with it), and the cache replaces the input "
            "by its code. Train without train.cache_features."
        )
    augmenting = [k for k, v in config.data.options().items() if "augment" in k and v]
    if getattr(data, "augments", False) or augmenting:
        raise ConfigError(
            f"train.cache_features cannot be used with data augmentation ({', '.join(augmenting) or 'on'}): the "
            "frozen encoder would see a different input every epoch, but the cache holds one code per example. "
            "Turn augmentation off or train without the cache."
        )
    device = "cuda" if config.trainer.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available() else "cpu"
    return FeatureCache(data, model, Path(run_dir) / CACHE_FILE, fingerprint(config, model), device=device)


def fingerprint(config: Config, model: EncoderDecoder) -> str:
    """A hash of what the cached codes depend on: the data config, the frozen parts and their weights."""
    h = hashlib.sha256(json.dumps({"data": config.data.model_dump(mode="json"), "parts": model.frozen,
                                   "names": model.names}, sort_keys=True).encode())
    for part in model.frozen:
        for key, tensor in sorted(getattr(model, part).state_dict().items()):
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# -- the stored codes ---------------------------------------------------------------------------------------
def kept_fields(model: EncoderDecoder) -> tuple[str, ...]:
    """The Code fields the parts after the cache read."""
    needs = set(type(model.decoder).needs)
    if "bottleneck" not in model.frozen and model.names["bottleneck"] != "none":
        needs.add("vector")  # a bottleneck that still runs reads the encoder's vector
    kept = ("vector", "memory", "tokens", "features", "state")  # a posterior is always kept
    return tuple(f for f in kept if f in needs)


def flatten_code(code: Code, fields: tuple[str, ...]) -> dict[str, Tensor]:
    """A Code -> batch-first tensors named by field ("features.0", "state.1", ...); None fields are left out."""
    out: dict[str, Tensor] = {}
    if "vector" in fields and code.vector is not None:
        out["vector"] = code.vector  # (B, D)
    if "memory" in fields and code.memory is not None:
        out["memory"] = code.memory  # (B, S, D)
        out["memory_mask"] = code.memory_mask  # (B, S)
    if "tokens" in fields and code.tokens is not None:
        out["tokens"] = code.tokens  # (B, S) long
    if "features" in fields:
        out.update({f"features.{i}": f for i, f in enumerate(code.features)})  # (B, C_i, H_i, W_i)
    if "state" in fields and code.state is not None:
        states = code.state if isinstance(code.state, tuple) else (code.state,)
        out.update({f"state.{i}": s.transpose(0, 1) for i, s in enumerate(states)})  # (L, B, H) -> (B, L, H)
    if code.posterior is not None:
        out["posterior.mu"], out["posterior.logvar"] = code.posterior.mu, code.posterior.logvar  # (B, D) each
    return out


def unflatten_code(t: dict[str, Tensor]) -> Code:
    """The inverse of :func:`flatten_code`."""
    features = tuple(t[f"features.{i}"] for i in range(sum(k.startswith("features.") for k in t)))
    states = [t[f"state.{i}"].transpose(0, 1).contiguous() for i in range(sum(k.startswith("state.") for k in t))]
    state = None if not states else states[0] if len(states) == 1 else tuple(states)
    posterior = Posterior(mu=t["posterior.mu"], logvar=t["posterior.logvar"]) if "posterior.mu" in t else None
    return Code(vector=t.get("vector"), memory=t.get("memory"), memory_mask=t.get("memory_mask"),
                tokens=t.get("tokens"), features=features, state=state, posterior=posterior)


def _concat(chunks: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Concatenate per-batch tensors along the batch; token memories are padded to the longest sequence."""
    out = {}
    for key in chunks[0]:
        parts = [c[key] for c in chunks]
        if key in ("memory", "memory_mask", "tokens"):  # masked positions: never read
            longest = max(p.shape[1] for p in parts)
            parts = [torch.nn.functional.pad(p, (0, 0) * (p.dim() - 2) + (0, longest - p.shape[1])) for p in parts]
        out[key] = torch.cat(parts).contiguous()
    return out


@torch.no_grad()
def compute_codes(model: EncoderDecoder, loader: DataLoader, fields: tuple[str, ...], device: str) -> dict[str, Tensor]:
    """Run the frozen parts over ``loader.dataset`` in index order -> {field: (N, ...)} on the CPU."""
    ordered = DataLoader(loader.dataset, batch_size=256, shuffle=False, collate_fn=loader.collate_fn)
    chunks = []
    for i, batch in enumerate(ordered):
        x = _input(batch).to(device)
        code = _frozen_forward(model, x)
        if i == 0:
            _check_deterministic(model, x, code)
        chunks.append({k: v.cpu() for k, v in flatten_code(code, fields).items()})
    return _concat(chunks)


def _frozen_forward(model: EncoderDecoder, x: Tensor) -> Code:
    code = model.encoder(x)
    return model.bottleneck(code) if "bottleneck" in model.frozen else code


def _check_deterministic(model: EncoderDecoder, x: Tensor, code: Code) -> None:
    again = flatten_code(_frozen_forward(model, x), ("vector", "memory", "features", "state"))
    first = flatten_code(code, ("vector", "memory", "features", "state"))
    if any(not torch.allclose(first[k], again[k], atol=1e-6) for k in first):
        raise TrainingError(
            f"train.cache_features: the frozen {' and '.join(model.frozen)} gave different codes for the same "
            "batch twice, so codes computed once would be wrong (something in it samples even in eval mode). "
            "Train without train.cache_features."
        )


def _input(batch: Any) -> Tensor:
    if not isinstance(batch, (tuple, list)) or not isinstance(batch[0], Tensor):
        raise TrainingError("train.cache_features needs batches of the form (input, ...), with the encoder's input "
                            f"tensor first; this data module gives {type(batch).__name__} batches.")
    return batch[0]


# -- the data module ----------------------------------------------------------------------------------------
class _Indexed(Dataset):
    """``dataset[i] -> (i, dataset[i])``, so that a batch knows which cached codes it needs."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[int, Any]:
        return i, self.dataset[i]


class FeatureCache(DataModule):
    """Wraps a data module: same batches, with the encoder input replaced by the frozen parts' CachedCode."""

    def __init__(self, data: DataModule, model: EncoderDecoder, path: Path, key: str, *, device: str = "cpu") -> None:
        super().__init__()
        self.data, self.model, self.path, self.key, self.device = data, model, Path(path), key, device
        self.parts = tuple(model.frozen)
        self.store: dict[str, dict[str, Tensor]] | None = None

    # what the wrapped module says stays true
    def context(self):
        return self.data.context()

    def describe(self) -> dict[str, Any]:
        return {**self.data.describe(), "cached": str(self.path)}

    def resume_at(self, epoch: int, batches_done: int) -> None:
        self.data.resume_at(epoch, batches_done)

    def setup(self, stage: str | None = None) -> None:
        self.data.setup(stage)
        if self.store is None:
            self.store = self._load() or self._build()

    def train_dataloader(self) -> DataLoader:
        return self._cached(self.data.train_dataloader(), "train")

    def val_dataloader(self) -> DataLoader:
        return self._cached(self.data.val_dataloader(), "val")

    def _cached(self, loader: DataLoader, split: str) -> DataLoader:
        """The data module's own loader, batch sampler included, with inputs swapped for cached codes."""
        self.setup("fit")
        codes = self.store[split]
        held = len(next(iter(codes.values())))
        if held != len(loader.dataset):
            raise TrainingError(f"The feature cache {self.path} holds {held} {split} codes but the data has "
                                f"{len(loader.dataset)} examples; delete the file to rebuild it.")
        collate = loader.collate_fn

        def collate_cached(items: list[tuple[int, Any]]) -> tuple:
            index = torch.tensor([i for i, _ in items])
            batch = collate([item for _, item in items])
            return (CachedCode(_take(codes, index), self.parts), *batch[1:])

        return DataLoader(_Indexed(loader.dataset), batch_sampler=loader.batch_sampler, collate_fn=collate_cached)

    # building and reading the file
    def _build(self) -> dict[str, dict[str, Tensor]]:
        fields = kept_fields(self.model)
        home = next(self.model.parameters()).device
        self.model.to(self.device)  # the frozen parts are in eval mode, as during training (EncoderDecoder.train)
        try:
            store = {"train": compute_codes(self.model, self.data.train_dataloader(), fields, self.device),
                     "val": compute_codes(self.model, self.data.val_dataloader(), fields, self.device)}
        finally:
            self.model.to(home)
        flat = {f"{split}/{k}": v for split, d in store.items() for k, v in d.items()}
        meta = {"format": FORMAT, "fingerprint": self.key, "parts": json.dumps(self.parts)}
        atomic_write(self.path, lambda tmp: save_file(flat, tmp, metadata=meta))
        return store

    def _load(self) -> dict[str, dict[str, Tensor]] | None:
        if not self.path.is_file():
            return None
        with safe_open(str(self.path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != FORMAT or meta.get("fingerprint") != self.key:
                return None  # made for other weights or data: rebuilt
            store: dict[str, dict[str, Tensor]] = {s: {} for s in SPLITS}
            for name in f.keys():
                split, key = name.split("/", 1)
                store[split][key] = f.get_tensor(name)
        return store


def _take(codes: dict[str, Tensor], index: Tensor) -> Code:
    """The cached Code of examples ``index`` (B,); token memories trimmed to the batch's longest row."""
    rows = {k: v[index] for k, v in codes.items()}
    if "memory_mask" in rows:
        used = rows["memory_mask"].any(0).nonzero()  # (S_used, 1): positions real in some row
        end = int(used.max()) + 1 if len(used) else 1
        rows["memory"], rows["memory_mask"] = rows["memory"][:, :end], rows["memory_mask"][:, :end]
    return unflatten_code(rows)
