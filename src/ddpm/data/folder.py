"""Any folder of images (png, jpg, jpeg, webp, bmp; recursive), with labels from sub-folders.

Images are resized (shorter side to image_size) and centre-cropped, in RGB or grayscale. When
every image lies in a sub-folder, the first-level sub-folder names (sorted) are the classes. The
test split is a fixed 1 in 20 of the files, chosen by a hash of each file's relative path, so it
stays put when files are added.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import torch

from ..errors import DDPMError
from ..safe_text import printable
from .image_data import ImageData, Split
from .images import decode_images, list_images
from .resize import crop_and_resize

TEST_FRACTION = 20  # 1 in 20 files is in the test split


def in_test_split(relative: str) -> bool:
    # fsencode: a name that is not UTF-8 hashes as its own bytes instead of raising
    return zlib.crc32(os.fsencode(relative)) % TEST_FRACTION == 0


def split_files(root: Path, paths: list[Path], split: Split) -> list[Path]:
    chosen = [
        p for p in paths if in_test_split(p.relative_to(root).as_posix()) == (split == "test")
    ]
    if not chosen:
        raise DDPMError(
            f"the {split} split of {printable(root)} is empty ({len(paths)} images in all)"
        )
    return chosen


def load_folder(root: str | None, split: Split, *, image_size: int, channels: int) -> ImageData:
    if not root:
        raise DDPMError("the folder dataset needs data.data_dir (a folder of images)")
    root_path = Path(root)
    paths = list_images(root_path)
    if not paths:
        raise DDPMError(f"no images (png, jpg, jpeg, webp, bmp) in {printable(root_path)}")
    paths = split_files(root_path, paths, split)
    images, kept = decode_images(paths, preprocess=crop_and_resize(image_size), channels=channels,
                                 size=image_size, recipe={"dataset": "folder"},
                                 where=f"{printable(root_path)} ({split})")  # fmt: skip
    parts = [paths[i].relative_to(root_path).parts for i in kept]
    labels, num_classes = None, 0
    if all(len(p) > 1 for p in parts):
        classes = sorted({p.relative_to(root_path).parts[0] for p in list_images(root_path)})
        index = {name: i for i, name in enumerate(classes)}
        labels = torch.tensor([index[p[0]] for p in parts], dtype=torch.long)
        num_classes = len(classes)
    return ImageData(
        images=torch.from_numpy(images), labels=labels, num_classes=num_classes, name="folder"
    )
