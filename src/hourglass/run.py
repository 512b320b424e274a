"""A trained run, loaded from its directory: the Python face of ``hourglass evaluate/encode/...``."""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hourglass.config import Config, read_yaml, validate
from hourglass.errors import CheckpointError, DataError, HourglassError
from hourglass.weights import load_weights, restore_hint


class Run:
    """``Run.load(path)``; then ``encode``, ``decode``, ``reconstruct``, ``sample`` on numpy arrays."""

    def __init__(self, path: Path, config: Config, task, data) -> None:
        self.path, self.config, self.task, self.data = Path(path), config, task, data

    @classmethod
    def load(cls, path: str | Path) -> "Run":
        from hourglass.training import build_data, build_task

        path = Path(path)
        if not (path / "config.yaml").is_file():
            raise CheckpointError(
                f"{path} is not an hourglass run directory (no config.yaml). Pass the folder that "
                "`hourglass train` printed last."
            )
        config = validate(read_yaml(path / "config.yaml"), str(path / "config.yaml"))
        if not (path / "model.safetensors").exists():
            _refuse_unfinished(path)
        data = build_data(config)
        data.load_artifacts(path)
        try:
            data.setup("fit")
        except DataError as gone:  # the training data has moved: fine for a run that stored what it needs
            try:
                data.context()
            except DataError:
                raise gone from None
        task = build_task(config, data, load_pretrained=False)  # model.safetensors holds every weight
        load_weights(task.model, path / "model.safetensors",
                     hint="This file does not belong to the config beside it; retrain or restore the run's own file.")
        task.eval()
        return cls(path, config, task, data)

    # -- metrics ----------------------------------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        """metrics.json of the run; {} when there is none (a stopped run) or it is not a JSON object."""
        return read_metrics(self.path)

    def evaluate(self, data_path: str | None = None, ref_path: str | None = None) -> dict[str, float]:
        """Metrics on the validation split, or on ``data_path`` (with its references in ``ref_path`` for data
        whose inputs and targets are separate files, such as parallel text: the data option ``val_ref``)."""
        if ref_path is not None and data_path is None:
            raise DataError("--ref gives the references of --data; give the inputs with --data as well.")
        if data_path is not None:
            return self.task.evaluate(self.with_val_data(data_path, ref_path))
        try:
            return self.task.evaluate(self.data)
        except DataError as err:  # the validation split is read from the config's paths, which may have moved
            raise DataError(f"{err} (The validation data of {self.path} is the one its config.yaml names; "
                            "evaluate on data elsewhere with --data PATH.)") from None

    def with_val_data(self, data_path: str, ref_path: str | None = None):
        """A copy of the run's data module whose validation split is the data at ``data_path`` (and ``ref_path``)."""
        from hourglass._registry import DATASETS
        from hourglass.options import parameters
        from hourglass.training import build_data

        takes = parameters(DATASETS.get(self.config.data.name))
        kind = self.config.data.name
        if "val_path" not in takes:
            raise DataError(f'The data of {self.path} ("{kind}") is generated, not read from files, so it cannot be '
                            "swapped for --data. Evaluate on its own validation split: leave --data out.")
        if ref_path is not None and "val_ref" not in takes:
            raise DataError(f'--ref gives the references of parallel text or captions; the data of {self.path} '
                            f'("{kind}") reads its targets with its inputs. Leave --ref out.')
        opts = dict(self.config.data.options(), val_path=str(data_path))
        if "val_ref" in takes:  # None without --ref: the run's own validation references belong to other inputs
            opts["val_ref"] = None if ref_path is None else str(ref_path)
        data = build_data(self.config.model_copy(update={"data": self.config.data.model_copy(update=opts)}))
        data.load_artifacts(self.path)
        data.setup("fit")
        self._check_shape(data)
        return data

    def _check_shape(self, data) -> None:
        want, got = self.data.context().encoder, data.context().encoder
        if want.get("input_shape") and tuple(data.val_set.tensors[0].shape[1:]) != tuple(want["input_shape"]):
            raise DataError(
                f"The images are {tuple(data.val_set.tensors[0].shape[1:])} (C, H, W) but the model of {self.path} "
                f"was trained on {tuple(want['input_shape'])}. Resize them (data.resize) or use matching images."
            )

    # -- model use (autoencoders) -------------------------------------------------------------------------------
    def image_shape(self, use: str = "encode images") -> tuple[int, ...]:
        """(C, H, W) of the images this run's encoder reads; a clear error naming ``use`` for a run that reads
        something else (text)."""
        context = self.data.context()
        shape = context.encoder.get("input_shape")
        if shape is None:
            raise HourglassError(
                f"The run {self.path} reads {context.modality}, not images, so it cannot {use}. "
                "Use `hourglass translate` on a text run, or give the directory of an image run."
            )
        return tuple(shape)

    def _images(self, images: np.ndarray, use: str = "encode images") -> torch.Tensor:
        """(N, C, H, W) numbers in [0, 1], or uint8 pixels in 0-255 (scaled here) -> a float tensor."""
        shape = self.image_shape(use)
        array = np.asarray(images)
        if array.dtype == np.uint8:
            array = array / 255.0
        elif array.size and (np.nanmax(array) > 1.0 or np.nanmin(array) < 0.0):
            raise DataError(
                f"The images hold values from {np.nanmin(array):.4g} to {np.nanmax(array):.4g}, but the model of "
                f"{self.path} reads float pixels in [0, 1] (or uint8 in 0-255). Scale them, e.g. images / 255."
            )
        x = torch.as_tensor(array, dtype=torch.float32)
        if tuple(x.shape[1:]) != tuple(shape):
            raise DataError(f"The model of {self.path} reads images of shape (N, {', '.join(map(str, shape))}) "
                            f"(N, C, H, W), but these are {tuple(x.shape)}. Resize them to {tuple(shape[-2:])} first "
                            "(`encode` and `reconstruct` read images as they are; data.resize does it only when "
                            "training), or use a run trained on images of this size.")
        return x

    def _autoencoder(self, use: str):
        """The task, when it is an autoencoder (the only kind that decodes codes back to images)."""
        if not hasattr(self.task, "reconstruct"):
            raise HourglassError(
                f'The run {self.path} is of task "{self.config.task.name}"; {use} needs an autoencoder run (task '
                "autoencoder, denoising, vae or wae). A segmentation run draws masks with `hourglass segment`; any "
                "image run gives codes with `hourglass encode`."
            )
        return self.task

    @torch.no_grad()
    def encode(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """(N, C, H, W) in [0, 1] (or uint8 in 0-255) -> codes (N, D)."""
        x = self._images(images)
        parts = [self.task.model.encode(x[i : i + batch_size]).vector for i in range(0, len(x), batch_size)]
        return torch.cat(parts).numpy()

    @torch.no_grad()
    def decode(self, codes: np.ndarray) -> np.ndarray:
        """(N, D) -> images (N, C, H, W) in [0, 1]."""
        return self._autoencoder("decode").decode(torch.as_tensor(np.asarray(codes, dtype=np.float32))).numpy()

    @torch.no_grad()
    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """(N, C, H, W) in [0, 1] (or uint8 in 0-255) -> reconstructions (N, C, H, W) in [0, 1]."""
        return self._autoencoder("reconstruct").reconstruct(self._images(images, "reconstruct images")).numpy()

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """n images decoded from codes drawn from the prior N(0, I) (VAE and WAE)."""
        if n < 1:
            raise HourglassError(f"Cannot draw {n} samples: give a count of at least 1 (e.g. -n 16).")
        if not self.task.generative:
            raise HourglassError(
                f'The run {self.path} is of task "{self.config.task.name}", which has no prior to sample from. '
                "Sampling needs a generative model: train a vae or wae recipe (e.g. mnist-vae)."
            )
        dim = self.task.model.bottleneck.spec.vector
        z = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))
        return self.decode(z.numpy())

    def export_onnx(self, out_dir: str | Path) -> dict[str, Any]:
        """ONNX graphs of this image run into ``out_dir``, checked with onnxruntime (:mod:`hourglass.export`);
        returns what export.json holds."""
        from hourglass.export import export

        return export(self, Path(out_dir))


def _refuse_unfinished(run: Path) -> None:
    """A clear error for a run without model.safetensors that has checkpoints: one stopped before training
    finished (killed, Ctrl-C), or one whose exported weights were removed afterwards. Without checkpoints, the
    weights' own "does not exist" error says the rest."""
    from hourglass.checkpoint import checkpoint_step

    folder = run / "checkpoints"
    found = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not found:
        return
    weights = run / "model.safetensors"
    if (run / "metrics.json").is_file():  # finish() writes it after model.safetensors: training did finish
        raise CheckpointError(f"{weights} is missing, though training of {run} finished (its metrics.json is "
                              f"there). {restore_hint(weights)}")
    last = folder / "last.safetensors"
    if not last.is_file():
        raise CheckpointError(
            f"{run} stopped before training finished, so it has no model.safetensors yet, and it has no "
            f"checkpoints/last.safetensors to continue from (only {', '.join(p.name for p in found)}). Train it "
            "again with a new --out."
        )
    step = checkpoint_step(last)
    at = f", from step {step}" if step is not None else ""
    raise CheckpointError(
        f"{run} stopped before training finished, so it has no model.safetensors yet (its last checkpoint is "
        f"{last}{at}). Finish it with `hourglass train --resume {run}`, which writes model.safetensors when "
        "training ends."
    )


def read_metrics(run: Path) -> dict[str, Any]:
    """``run``/metrics.json as a dict; {} with a warning when it is not a JSON object (edited by hand, cut off)."""
    file = Path(run) / "metrics.json"
    if not file.is_file():
        return {}
    try:
        metrics = json.loads(file.read_text(encoding="utf-8"))
        problem = None if isinstance(metrics, dict) else f"a JSON {type(metrics).__name__}"
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        problem = str(err)
    if problem:
        warnings.warn(f"{file} is not a JSON object of metrics ({problem}); its metrics are left out. `hourglass "
                      f"evaluate {run}` computes them again.", UserWarning, stacklevel=2)
        return {}
    return metrics


def load_run(path: str | Path) -> Run:
    return Run.load(path)
