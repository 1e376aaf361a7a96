"""Reading a user's images and masks for `ddpm inpaint` and `ddpm edit`: one file or a folder,
checked against the run's size and channels with one clear line for what does not fit.

- Size: an image must be the run's size x size, or with resize=True is brought to it as training
  brings folder images (shorter side scaled, bicubic and antialiased, centred square kept).
- Channels: grey files (mode L, or RGB with equal channels) for a grey run, colour for a colour
  run; with convert=True colour becomes grey by PIL's luminance (L = 0.299 R + 0.587 G + 0.114 B)
  and grey becomes RGB by repetition. Alpha is dropped.
- Masks: white (>= 128) keeps a pixel, black generates it. A mask is one file for every image or
  a folder with one file per image under the same relative name (any image extension); it must
  have its image's size (resized with it, nearest neighbour, under resize=True). A mask with grey
  levels other than 0 and 255 is thresholded at 128, with a warning saying so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from .data.decode import Unusable, decode_file
from .data.folder_survey import is_grey
from .data.images import EXTENSIONS, list_images
from .data.resize import crop_and_resize
from .errors import DDPMError
from .safe_text import printable

log = logging.getLogger(__name__)
MASK_THRESHOLD = 128  # mask pixels >= this keep the image's pixel


@dataclass(frozen=True)
class InputImages:
    """pixels: uint8 [N, C, size, size]; paths: the N files; names: their paths relative to the
    folder given (a file's own name for one file); sizes: each file's own (width, height)."""

    pixels: torch.Tensor
    paths: list[Path]
    names: list[str]
    sizes: list[tuple[int, int]]


def image_files(path: str | Path, option: str) -> tuple[list[Path], list[str]]:
    """The image files `path` names (itself, or every image below a folder) and their names."""
    path = Path(path)
    if path.is_dir():
        files = list_images(path)
        if not files:
            raise DDPMError(f"{option}: no images (.png, .jpg, .webp, .bmp) in {printable(path)}")
        return files, [f.relative_to(path).as_posix() for f in files]
    if not path.is_file():
        raise DDPMError(f"{option}: no such file or folder: {printable(path)}")
    return [path], [path.name]


def _header(path: Path, option: str) -> tuple[int, int, bool]:
    """(width, height, grey) from the file's header."""
    try:
        with Image.open(path) as image:
            return image.size[0], image.size[1], is_grey(image)
    except (OSError, ValueError) as error:
        raise DDPMError(f"{option}: {printable(path)} is not a readable image ({error})") from None


def _decode(path: Path, mode: str, size: int, resize: bool, option: str) -> np.ndarray:
    """uint8 [C, H, W] in `mode`, resized as training does when asked."""
    keep_size = lambda image: image  # noqa: E731
    try:
        decoded = decode_file(path, crop_and_resize(size) if resize else keep_size, mode, size=size)
    except Unusable as error:
        raise DDPMError(f"{option}: {printable(path)}: {error}") from None
    return decoded.array


def read_images(
    path: str | Path,
    *,
    size: int,
    channels: int,
    resize: bool = False,
    convert: bool = False,
    option: str = "--image",
) -> InputImages:
    """The images `path` names as uint8 [N, channels, size, size] (see the module for the rules);
    DDPMError (one line naming the file and the flag that would accept it) for one that does not
    fit."""
    files, names = image_files(path, option)
    arrays, sizes = [], []
    for file in files:
        width, height, grey = _header(file, option)
        sizes.append((width, height))
        if (width, height) != (size, size) and not resize:
            raise DDPMError(
                f"{option}: {printable(file)} is {width}x{height} but the run makes {size}x{size} "
                f"images: pass --resize to resize it (shorter side, centre crop, as training does)"
            )
        if channels == 1:
            array = _decode(file, "L" if grey or convert else "RGB", size, resize, option)
            if array.shape[0] == 3:  # an RGB file: grey only if its channels are equal
                if not (array[0] == array[1]).all() or not (array[1] == array[2]).all():
                    raise DDPMError(
                        f"{option}: {printable(file)} is in colour but the run's images are grey: "
                        f"pass --convert to convert it (luminance)"
                    )
                array = array[:1]
        else:
            if grey and not convert:
                raise DDPMError(
                    f"{option}: {printable(file)} is grey but the run's images are in colour (RGB): "
                    f"pass --convert to convert it (grey repeated in R, G and B)"
                )
            array = _decode(file, "RGB", size, resize, option)
        arrays.append(array)
    return InputImages(torch.from_numpy(np.stack(arrays)), files, names, sizes)


def _mask_for(mask_root: Path, name: str, option: str) -> Path:
    """The mask in folder `mask_root` for the image named `name` (same relative path and stem)."""
    wanted = mask_root / name
    if wanted.parent.is_dir():
        for candidate in sorted(wanted.parent.iterdir()):
            if candidate.stem == wanted.stem and candidate.suffix.lower() in EXTENSIONS:
                return candidate
    raise DDPMError(f"{option}: no mask for {printable(name)} in {printable(mask_root)} "
                    f"(a mask folder needs one file per image, under the same name)")  # fmt: skip


def read_masks(
    path: str | Path,
    images: InputImages,
    *,
    size: int,
    resize: bool = False,
    option: str = "--mask",
) -> torch.Tensor:
    """bool [N, 1, size, size], True where the image's pixel is kept (mask >= 128), one per image
    of `images`; DDPMError when a mask's size is not its image's."""
    root = Path(path)
    if not root.exists():
        raise DDPMError(f"{option}: no such file or folder: {printable(root)}")
    masks, read = (
        [],
        {},
    )  # read: one mask file shared by every image is read (and warned about) once
    for image_path, name, image_size in zip(images.paths, images.names, images.sizes):
        mask_path = _mask_for(root, name, option) if root.is_dir() else root
        if mask_path not in read:
            read[mask_path] = _read_mask(mask_path, size, resize, option)
        mask_size, keep = read[mask_path]
        if mask_size != image_size:
            raise DDPMError(
                f"{option}: {printable(mask_path)} is {mask_size[0]}x{mask_size[1]} but its image "
                f"{printable(image_path)} is {image_size[0]}x{image_size[1]}: a mask must have its "
                f"image's size"
            )
        masks.append(keep)
    return torch.stack(masks)


def _read_mask(
    mask_path: Path, size: int, resize: bool, option: str
) -> tuple[tuple[int, int], torch.Tensor]:
    """(the file's own (width, height), bool [1, size, size] kept pixels) of one mask file,
    warning when it is not black and white. A mask of another size than `size` comes back at its
    own size unless resize (its image must then be refused or resized too: read_masks checks)."""
    mask_size = _header(mask_path, option)[:2]
    mask = _decode(mask_path, "L", size, False, option)
    if resize and mask_size != (size, size):
        mask = _resize_mask(mask, size)
    levels = np.unique(mask)
    if not set(levels.tolist()) <= {0, 255}:
        log.warning(
            "%s is not black and white (%d grey levels): thresholded at %d, pixels >= %d "
            "(white) are kept", printable(mask_path), len(levels), MASK_THRESHOLD, MASK_THRESHOLD,
        )  # fmt: skip
    return mask_size, torch.from_numpy(mask >= MASK_THRESHOLD)


def _resize_mask(mask: np.ndarray, size: int) -> np.ndarray:
    """A mask [1, H, W] brought to [1, size, size] as its image is (shorter side, centre crop), by
    nearest neighbour so that it stays black and white."""
    image = Image.fromarray(mask[0])
    image = TF.resize(image, size, interpolation=InterpolationMode.NEAREST)
    square: Image.Image = TF.center_crop(image, [size, size])
    return np.asarray(square, dtype=np.uint8)[None]
