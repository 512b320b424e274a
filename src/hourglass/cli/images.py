"""``encode``, ``reconstruct`` and ``sample``: using a trained autoencoder on images."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from hourglass.cli.args import count_upto, file_ending, refuse_overwrite, seed


#: The most images one PNG grid draws: 100 million samples once ran out of memory after half a minute.
GRID, GRID_WHY = 4096, "one PNG grid; Run.sample in Python draws more"


def register(sub) -> None:
    p = sub.add_parser("encode", help="write one code vector per input image to a .npy file")
    p.add_argument("run")
    p.add_argument("--data", required=True, help="a folder of images, an IDX file, or a .npy/.npz array")
    p.add_argument("--output", required=True, type=file_ending(".npy"), help="FILE.npy")
    p.set_defaults(func=cmd_encode)

    p = sub.add_parser("reconstruct", help="draw inputs above their reconstructions")
    p.add_argument("run")
    p.add_argument("--data", required=True)
    p.add_argument("--output", required=True, type=file_ending(".png"), help="FILE.png")
    p.add_argument("-n", type=count_upto(GRID, GRID_WHY), default=10, help="how many images to draw (default 10)")
    p.set_defaults(func=cmd_reconstruct)

    p = sub.add_parser("sample", help="draw samples from a generative model (vae, wae)")
    p.add_argument("run")
    p.add_argument("-n", type=count_upto(GRID, GRID_WHY), default=32,
                   help=f"how many samples to draw (default 32, at most {GRID})")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--output", required=True, type=file_ending(".png"), help="FILE.png")
    p.set_defaults(func=cmd_sample)


def _read(run, path: str, use: str, limit: int | None = None) -> np.ndarray:
    """The images at ``path``, read as ``run`` was trained (channels, resize); ``use`` names the command's work in
    the error for a run that does not read images."""
    from hourglass.data.images import read_images

    channels = run.image_shape(use)[0]  # before reading: a text run is refused, not a KeyError
    return read_images(path, resize=run.config.data.options().get("resize"), channels=channels, limit=limit).images


def cmd_encode(args) -> int:
    from hourglass.io import atomic_write
    from hourglass.run import Run

    refuse_overwrite(args.output, args.data, "codes.npy")
    run = Run.load(args.run)
    codes = run.encode(_read(run, args.data, "encode images"))
    atomic_write(Path(args.output), lambda tmp: np.save(open(tmp, "wb"), codes))
    print(f"wrote {codes.shape[0]} codes of size {codes.shape[1]} to {args.output}")
    return 0


def cmd_reconstruct(args) -> int:
    from hourglass import plots
    from hourglass.run import Run

    refuse_overwrite(args.output, args.data, "reconstructions.png")
    run = Run.load(args.run)
    images = _read(run, args.data, "reconstruct images", limit=args.n)
    plots.image_grid([images, run.reconstruct(images)], ["input", "reconstruction"], Path(args.output))
    print(args.output)
    return 0


def cmd_sample(args) -> int:
    from hourglass import plots
    from hourglass.run import Run

    run = Run.load(args.run)
    plots.sample_grid(run.sample(args.n, seed=args.seed), Path(args.output))
    print(args.output)
    return 0
