"""Any folder of images (png, jpg, jpeg, webp, bmp; recursive), with labels from sub-folders when
asked (data.labels_from_subfolders: the first-level sub-folder names, sorted, are the classes).

Images are resized (shorter side to image_size) and centre-cropped, in RGB or grayscale. The test
split is a fixed 1 in 20 of the files, chosen by a hash of each file's relative path, so it stays
put when files are added; a folder so small that no file hashes into it (under a few dozen
images) lends its test split the one file with the smallest hash instead.
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


def _path_hash(relative: str) -> int:
    # fsencode: a name that is not UTF-8 hashes as its own bytes instead of raising
    return zlib.crc32(os.fsencode(relative))


def in_test_split(relative: str) -> bool:
    """Whether the file at this relative path (posix) is in the test split of a folder that has
    at least one such file."""
    return _path_hash(relative) % TEST_FRACTION == 0


def split_files(root: Path, paths: list[Path], split: Split) -> list[Path]:
    """The files of `paths` (below root) in `split`: the hashed 1 in 20 for test, the rest for
    train; when none hashes into test, test is the file of smallest hash (ties: path order)."""
    relative = [p.relative_to(root).as_posix() for p in paths]
    in_test = [in_test_split(r) for r in relative]
    if not any(in_test) and len(paths) > 1:
        smallest = min(range(len(paths)), key=lambda i: (_path_hash(relative[i]), relative[i]))
        in_test[smallest] = True
    chosen = [p for p, test in zip(paths, in_test) if test == (split == "test")]
    if not chosen:
        raise DDPMError(
            f"the {split} split of {printable(root)} is empty ({len(paths)} images in all; "
            f"a folder needs at least 2)"
        )
    return chosen


def subfolder_classes(root: Path, paths: list[Path]) -> list[str]:
    """The class names (first-level sub-folders, sorted) of the images `paths` below root;
    refuses images at root's top level, which have no class."""
    parts = [p.relative_to(root).parts for p in paths]
    loose = [p for p in parts if len(p) == 1]
    if loose:
        raise DDPMError(
            f"data.labels_from_subfolders needs every image in a sub-folder of {printable(root)}, "
            f"one per class; {len(loose)} lie at its top level (e.g. {printable(loose[0][0])})"
        )
    return sorted({p[0] for p in parts})


def load_folder(
    root: str | None,
    split: Split,
    *,
    image_size: int,
    channels: int,
    labels_from_subfolders: bool = False,
    progress: bool = True,
) -> ImageData:
    """A split of the images below `root`: uint8 [N, channels, image_size, image_size], with
    labels [N] (int64) when labels_from_subfolders."""
    if not root:
        raise DDPMError("the folder dataset needs data.data_dir (a folder of images)")
    root_path = Path(root)
    all_paths = list_images(root_path)
    if not all_paths:
        raise DDPMError(f"no images (png, jpg, jpeg, webp, bmp) in {printable(root_path)}")
    classes = subfolder_classes(root_path, all_paths) if labels_from_subfolders else []
    paths = split_files(root_path, all_paths, split)
    images, kept = decode_images(paths, preprocess=crop_and_resize(image_size), channels=channels,
                                 size=image_size, recipe={"dataset": "folder"},
                                 where=f"{printable(root_path)} ({split})",
                                 progress=progress)  # fmt: skip
    labels = None
    if classes:
        index = {name: i for i, name in enumerate(classes)}
        labels = torch.tensor(
            [index[paths[i].relative_to(root_path).parts[0]] for i in kept], dtype=torch.long
        )
    return ImageData(
        images=torch.from_numpy(images), labels=labels, num_classes=len(classes), name="folder"
    )
