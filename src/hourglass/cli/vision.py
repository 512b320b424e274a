"""``segment``: class masks and coloured overlays for images, from a trained segmentation run."""
from __future__ import annotations

from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("segment", help="write a class-id mask PNG and a coloured overlay PNG for each image")
    p.add_argument("run", help="a run directory of a segmentation model (e.g. from `hourglass train camvid-unet`)")
    p.add_argument("images", nargs="+", help="image files, or folders of images")
    p.add_argument("--output", required=True, help="folder for NAME.png (class ids) and NAME-overlay.png")
    p.add_argument("--alpha", type=float, default=0.5, help="opacity of the class colours in the overlay")
    p.set_defaults(func=cmd_segment)


def _inputs(items: list[str]) -> list[Path]:
    from hourglass.data.seg_files import list_images
    from hourglass.errors import DataError

    files: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            files += list_images(item, "images", given_as="the IMAGE arguments").values()
        elif item.is_file():
            files.append(item)
        else:
            what = "is not a file or a folder" if item.exists() else "does not exist"
            raise DataError(f"The input {item} {what} (working directory {Path.cwd()}). Give image files or "
                            "folders of images; nothing was written.")
    stems = [f.stem for f in files]
    dup = sorted({s for s in stems if stems.count(s) > 1})
    if dup:
        raise DataError(f"Several inputs share the name(s) {', '.join(dup[:5])}, so their masks would overwrite "
                        "each other in --output. Rename them or segment them into separate folders.")
    return files


def _outputs(files: list[Path], out: Path) -> list[tuple[Path, Path]]:
    """The (mask, overlay) paths of each input in ``out``; refused, before anything is written, when ``out`` is a
    file or a path would overwrite one of the inputs (``--output`` the input folder, with PNG inputs)."""
    from hourglass.errors import DataError

    if out.exists() and not out.is_dir():
        raise DataError(f"--output {out} is a file; give a folder for the masks (nothing was written).")
    paths = [(out / f"{f.stem}.png", out / f"{f.stem}-overlay.png") for f in files]
    inputs = {f.resolve() for f in files}
    clash = [str(p) for pair in paths for p in pair if p.resolve() in inputs]
    if clash:
        raise DataError(f"The masks would overwrite the input image(s) {', '.join(clash[:3])}: --output {out} holds "
                        "them. Give --output another folder (for example masks/); nothing was written.")
    return paths


def cmd_segment(args) -> int:
    """Each image is resized to the size the model was trained on, segmented, and its mask resized back."""
    import cv2
    import numpy as np
    import torch
    from PIL import Image

    from hourglass import plots
    from hourglass.data.seg_files import read_image
    from hourglass.errors import HourglassError
    from hourglass.io import atomic_write
    from hourglass.run import Run
    from hourglass.tasks.seg_results import overlay

    run = Run.load(args.run)
    if not hasattr(run.task, "segment"):
        raise HourglassError(f'The run {run.path} is of task "{run.config.task.name}"; `hourglass segment` needs '
                             "a segmentation run (e.g. one trained with the camvid-unet recipe).")
    _, height, width = run.data.context().encoder["input_shape"]
    palette = plots.default_palette(run.data.context().decoder["num_classes"])
    files, out = _inputs(args.images), Path(args.output)
    targets = _outputs(files, out)
    out.mkdir(parents=True, exist_ok=True)
    for path, (mask_path, blend_path) in zip(files, targets):
        image = read_image(path)  # (h, w, 3) uint8
        h, w = image.shape[:2]
        resized = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA) if (h, w) != (height, width) else image
        x = torch.from_numpy(resized).permute(2, 0, 1)[None].float() / 255.0  # (1, 3, H, W)
        with torch.no_grad():
            mask = run.task.segment(x)[0].numpy().astype(np.uint8 if len(palette) <= 256 else np.uint16)  # (H, W)
        if (h, w) != (height, width):
            mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
        blend = overlay(image, mask, palette, args.alpha)
        atomic_write(mask_path, lambda tmp: Image.fromarray(mask).save(tmp, format="PNG"))
        atomic_write(blend_path, lambda tmp: Image.fromarray(blend).save(tmp, format="PNG"))
        print(mask_path)
    return 0
