"""What a folder of images holds, read from the files' headers without decoding their pixels: how
many images, their most common size, whether every one is grey, and the class sub-folders. `ddpm
train --data-dir DIR` picks the image size and channels from it (ddpm.config_auto)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..config_auto import auto_image_size
from ..errors import DDPMError
from ..safe_text import printable
from .images import list_images

SURVEY_LIMIT = 2000  # headers read, spread evenly over a larger folder
GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}


@dataclass(frozen=True)
class FolderSurvey:
    """num_images: image files below the folder; num_read of them surveyed (at most
    SURVEY_LIMIT), num_unreadable of those with no readable header; common_size (width, height)
    the most common size, num_common images of it; grey: every readable surveyed image is grey;
    classes: the first-level sub-folders (sorted), [] when an image lies at the top level."""

    root: Path
    num_images: int
    num_read: int
    num_unreadable: int
    common_size: tuple[int, int]
    num_common: int
    grey: bool
    classes: list[str]

    @property
    def image_size(self) -> int:
        """The square size to train at: the common size's shorter side, rounded (config_auto)."""
        return auto_image_size(min(self.common_size))

    @property
    def channels(self) -> int:
        return 1 if self.grey else 3

    def describe(self) -> str:
        """One line, e.g. '412 images in photos (most common size 640x480: 380 of 412; colour)'."""
        width, height = self.common_size
        surveyed = " surveyed" if self.num_read < self.num_images else ""
        unreadable = f"; {self.num_unreadable} unreadable" if self.num_unreadable else ""
        return (
            f"{self.num_images} images in {printable(self.root)} (most common size "
            f"{width}x{height}: {self.num_common} of {self.num_read}{surveyed}{unreadable}; "
            f"{'all grey' if self.grey else 'colour'})"
        )


def is_grey(image: Image.Image) -> bool:
    """Whether an open image is grey: a grey mode, or a palette of grey levels only."""
    if image.mode == "P":  # a palette of grey levels only
        palette = image.getpalette() or []
        return all(
            palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette), 3)
        )
    return image.mode in GREY_MODES


def survey_folder(root: str | Path) -> FolderSurvey:
    """Survey the images below `root` (recursively; list_images' extensions)."""
    root = Path(root)
    paths = list_images(root)
    if not paths:
        raise DDPMError(f"no images (png, jpg, jpeg, webp, bmp) in {printable(root)}")
    stride = max(1, -(-len(paths) // SURVEY_LIMIT))
    surveyed = paths[::stride]
    sizes: Counter[tuple[int, int]] = Counter()
    grey, unreadable = True, 0
    for path in surveyed:
        try:
            with Image.open(path) as image:  # reads the header only
                sizes[image.size] += 1
                grey = grey and is_grey(image)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
            unreadable += 1
    if not sizes:
        raise DDPMError(
            f"none of the {len(surveyed)} image files surveyed in {printable(root)} is readable"
        )
    common, count = sizes.most_common(1)[0]
    parts = [p.relative_to(root).parts for p in paths]
    classes = sorted({p[0] for p in parts}) if all(len(p) > 1 for p in parts) else []
    return FolderSurvey(
        root=root, num_images=len(paths), num_read=len(surveyed), num_unreadable=unreadable,
        common_size=common, num_common=count, grey=grey, classes=classes,
    )  # fmt: skip
