"""Offline feature networks: a small classifier trained on a dataset's own training split, whose
pooled features stand in for Inception-v3's when its weights cannot be downloaded.

FID, KID and precision/recall in this space are comparable between runs that use the same
network file (its SHA-256 is part of every reported feature-space name), not with published
Inception numbers. The classifier's softmax gives a classifier score, IS computed with it.
Files live in `<cache>/featnet/<name>.safetensors`: the weights, and as JSON metadata the
architecture, the dataset and the test accuracy. No pickle.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from ..data import ImageData
from ..data.cache import cache_dir
from ..errors import DDPMError
from ..files import atomic_write
from ..pixels import from_uint8

FORMAT = "ddpm-featnet-v1"


@dataclass(frozen=True)
class FeatNetInfo:
    """What a feature network file holds besides its weights."""

    name: str
    dataset: str
    image_size: int
    channels: int
    num_classes: int
    widths: tuple[int, ...]
    test_accuracy: float
    epochs: int
    train_images: int
    sha256: str = ""  # of the file, filled in on load

    @property
    def feature_space(self) -> str:
        """How reports name this space: the network and a prefix of its file's hash."""
        return f"featnet:{self.name}@{self.sha256[:12]}"


class FeatureNet(nn.Module):
    """A VGG-style classifier: per width two 3x3 conv + batch-norm + SiLU, then 2x2 max-pool; a
    global average pool gives the features [B, widths[-1]], a linear layer the logits."""

    def __init__(self, channels: int, num_classes: int, widths: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = channels
        for width in widths:
            for _ in range(2):
                layers += [nn.Conv2d(c_in, width, 3, padding=1, bias=False)]
                layers += [nn.BatchNorm2d(width), nn.SiLU()]
                c_in = width
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: float [B, C, H, W] in [-1, 1] -> (features [B, F], logits [B, K])."""
        features = self.body(x).mean(dim=(2, 3))
        return features, self.head(features)


def prepare_input(images: torch.Tensor, *, image_size: int, channels: int) -> torch.Tensor:
    """uint8 [B, 1 or 3, H, W] -> float [B, channels, image_size, image_size] in [-1, 1]: grey
    from RGB by the channel mean (exact for grey images stored as RGB), resized if needed."""
    x = images.float()
    if x.shape[1] == 3 and channels == 1:
        x = x.mean(dim=1, keepdim=True)
    elif x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-2:] != (image_size, image_size):
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", antialias=True)
    return from_uint8(x)


def featnet_path(name: str) -> Path:
    return cache_dir() / "featnet" / f"{name}.safetensors"


def save_featnet(net: FeatureNet, info: FeatNetInfo, path: Path) -> Path:
    """Write weights + metadata atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {k: v for k, v in asdict(info).items() if k != "sha256"}
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    blob = save_safetensors(state, metadata={"format": FORMAT, "info": json.dumps(meta)})
    atomic_write(path, blob)
    return path


def load_featnet(
    name_or_path: str, *, device: torch.device | str = "cpu"
) -> tuple[FeatureNet, FeatNetInfo]:
    """-> (FeatureNet in eval mode, FeatNetInfo) from a cache name ("fashion-mnist") or a file."""
    path = Path(name_or_path)
    if path.suffix != ".safetensors":
        path = featnet_path(name_or_path)
    if not path.is_file():
        raise DDPMError(
            f"no feature network {name_or_path!r} ({path} not found); train one with "
            f"`ddpm featnet train --dataset {name_or_path}`"
        )
    blob = path.read_bytes()
    try:
        state = load_safetensors(blob)
        with path.open("rb") as f:  # header: 8-byte length, then JSON with __metadata__
            header = json.loads(f.read(int.from_bytes(f.read(8), "little")))
        meta = header.get("__metadata__", {})
        if meta.get("format") != FORMAT:
            raise ValueError("not a ddpm feature network")
        fields = json.loads(meta["info"])
        fields["widths"] = tuple(fields["widths"])
        info = FeatNetInfo(**fields, sha256=hashlib.sha256(blob).hexdigest())
        net = FeatureNet(info.channels, info.num_classes, info.widths)
        net.load_state_dict(state)
    except (SafetensorError, ValueError, KeyError, TypeError, RuntimeError) as error:
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DDPMError(f"{path} is not a readable feature network ({first})") from None
    return net.to(device).eval().requires_grad_(False), info


@torch.inference_mode()
def require_labels(data: ImageData) -> torch.Tensor:
    """data.labels, or a DDPMError: a feature network learns and is scored on class labels."""
    if data.labels is None:
        raise DDPMError(
            f"a feature network needs class labels; dataset {data.name} has no labels "
            f"(for a folder: put each class's images in its own sub-folder)"
        )
    return data.labels


def accuracy(net: FeatureNet, data: ImageData, *, batch_size: int = 512) -> float:
    """Top-1 accuracy of `net` on labelled data."""
    labels = require_labels(data)
    net.eval()
    device = next(net.parameters()).device
    correct = 0
    for start in range(0, len(data), batch_size):
        images = data.images[start : start + batch_size]
        x = prepare_input(images, image_size=images.shape[-1], channels=images.shape[1])
        _, logits = net(x.to(device))
        correct += int((logits.argmax(1).cpu() == labels[start : start + batch_size]).sum())
    return correct / len(data)


def train_featnet(
    train: ImageData,
    *,
    epochs: int = 4,
    batch_size: int = 128,
    lr: float = 2e-3,
    random_flip: bool = False,
    seed: int = 0,
    widths: tuple[int, ...] = (32, 64, 128),
    device: torch.device | str = "cpu",
    progress: Callable[[int, float], None] | None = None,
) -> FeatureNet:
    """Train a FeatureNet on labelled uint8 images: AdamW with a one-cycle cosine learning rate,
    label smoothing 0.1, optional horizontal flips. progress(step, loss) every 25 steps."""
    if train.labels is None or train.num_classes < 2:
        raise DDPMError(
            f"a feature network needs class labels; dataset {train.name} has none "
            f"(for a folder: put each class's images in its own sub-folder)"
        )
    generator = torch.Generator().manual_seed(seed)
    c, size = train.images.shape[1], train.images.shape[-1]
    with torch.random.fork_rng(devices=[]):  # seeded initialisation, the global RNG untouched
        torch.manual_seed(seed)
        net = FeatureNet(c, train.num_classes, widths).to(device).train()
    steps_per_epoch = math.ceil(len(train) / batch_size)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch, pct_start=0.15
    )
    step = 0
    for _ in range(epochs):
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train), batch_size):
            index = order[start : start + batch_size]
            x = prepare_input(train.images[index], image_size=size, channels=c)
            if random_flip:
                flip = torch.rand(len(index), generator=generator) < 0.5
                x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
            _, logits = net(x.to(device))
            loss = F.cross_entropy(logits, train.labels[index].to(device), label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if progress is not None and (step % 25 == 0 or step == epochs * steps_per_epoch):
                progress(step, float(loss.detach()))  # a host sync, so only every 25 steps
    return net.eval()
