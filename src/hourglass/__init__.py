"""hourglass: any encoder, any decoder.

Python API (mirrors the CLI)::

    import hourglass as hg
    config = hg.load_config("digits-ae", ["train.max_epochs=5"])   # a recipe name or a YAML path
    run_dir = hg.train(config)
    run = hg.load_run(run_dir)
    codes = run.encode(images); recon = run.reconstruct(images)
    samples = hg.load_run(vae_run_dir).sample(16)                   # a vae or wae run: it has a prior
    model = hg.build_model(config.model, data_context)             # just the network
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Code", "CodeSpec", "build_model", "load_config", "train", "load_run", "Run", "AutoencoderTransformer",
           "list_encoders", "list_decoders"]


def __getattr__(name: str):
    # Lazy imports keep `import hourglass` and `hourglass --help` fast (torch and Lightning load on first use).
    if name in ("Code", "CodeSpec"):
        from hourglass import code

        return getattr(code, name)
    if name == "build_model":
        from hourglass.model import build_model

        return build_model
    if name == "load_config":
        from hourglass.recipebook import load

        return load
    if name == "train":
        from hourglass.training import train

        return train
    if name in ("load_run", "Run"):
        from hourglass import run

        return getattr(run, name)
    if name == "AutoencoderTransformer":
        from hourglass.estimator import AutoencoderTransformer

        return AutoencoderTransformer
    if name in ("list_encoders", "list_decoders"):
        from hourglass import _registry

        return getattr(_registry, name)
    raise AttributeError(name)
