"""CelebA at 64x64: img_align_celeba/*.jpg centre-cropped to 140x140 and resized to 64x64, the
preprocessing of the DDPM and DDIM papers' CelebA models.

The official split (list_eval_partition.txt: 0 train, 1 valid, 2 test) is used when present, in
the dataset root or its Eval/ folder; otherwise the fixed hash split of the folder dataset.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DDPMError
from ..safe_text import printable
from .folder import split_files
from .image_data import ImageData, Split
from .images import decode_images, list_images
from .resize import crop_and_resize
from .roots import find_root, search_roots

CROP = 140
PARTITION = {"train": "0", "test": "2"}


def locate(data_dir: str | None) -> Path:
    """The folder holding img_align_celeba/ (and perhaps list_eval_partition.txt)."""
    roots = search_roots(data_dir, Path("data"), Path("data") / "celeba")
    root = find_root(roots, ["celeba"], lambda folder: (folder / "img_align_celeba").is_dir())
    if root is None:
        looked = ", ".join(printable(r) for r in roots)
        raise DDPMError(
            f"CelebA's img_align_celeba/ folder not found under {looked}; set data.data_dir"
        )
    return root


def read_partition(root: Path) -> dict[str, str] | None:
    for candidate in (root / "list_eval_partition.txt", root / "Eval" / "list_eval_partition.txt"):
        if candidate.is_file():
            entries = {}
            for number, line in enumerate(candidate.read_text().splitlines(), 1):
                fields = line.split()
                if len(fields) != 2 or fields[1] not in "012":
                    raise DDPMError(
                        f"{printable(candidate)}, line {number}: expected 'NAME.jpg 0|1|2'"
                    )
                entries[fields[0]] = fields[1]
            return entries
    return None


def load_celeba64(
    data_dir: str | None, split: Split, *, image_size: int = 64, progress: bool = True
) -> ImageData:
    root = locate(data_dir)
    folder = root / "img_align_celeba"
    paths = list_images(folder)
    if not paths:
        raise DDPMError(f"no images in {printable(folder)}")
    partition = read_partition(root)
    if partition is None:
        paths = split_files(folder, paths, split)
    else:
        paths = [p for p in paths if partition.get(p.name) == PARTITION[split]]
        if not paths:
            raise DDPMError(f"no file of {printable(folder)} is listed in the {split} partition")
    images, kept = decode_images(paths, preprocess=crop_and_resize(image_size, crop=CROP),
                                 channels=3, size=image_size,
                                 recipe={"dataset": "celeba", "crop": CROP},
                                 where=f"{printable(folder)} ({split})",
                                 progress=progress)  # fmt: skip
    return ImageData(images=torch.from_numpy(images), labels=None, num_classes=0, name="celeba64")
