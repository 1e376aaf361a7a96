"""Feature spaces for FID/IS/KID/precision-recall, as torch-fidelity feature extractors.

Two kinds: torch-fidelity's own Inception-v3 ("inception-v3-compat", the TF-FID port whose numbers
match published ones) when its weights file is on disk, and ddpm's offline feature networks,
registered with torch-fidelity as "ddpm-featnet" so that its own tools (`fidelity --feature-extractor
ddpm-featnet --feature-extractor-weights-path FILE`, after `import ddpm.metrics`) score with them too.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from ..errors import DDPMError
from ..files import atomic_write
from .featnet import featnet_path, load_featnet, prepare_input

FEATNET_EXTRACTOR = "ddpm-featnet"
INCEPTION_EXTRACTOR = "inception-v3-compat"
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity's download name
INCEPTION_URL = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_FILE
)


class FeatNetExtractor(FeatureExtractorBase):
    """torch-fidelity's interface over a ddpm FeatureNet: uint8 [B, 1 or 3, H, W] in, the pooled
    features [B, F] ("features") and class logits [B, K] ("logits") out."""

    def __init__(
        self,
        name: str,
        features_list: Sequence[str],
        feature_extractor_weights_path: str | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise DDPMError(f"{FEATNET_EXTRACTOR} needs a feature network file (weights path)")
        self.net, self.info = load_featnet(str(feature_extractor_weights_path))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError("expected uint8 images [B, C, H, W]")
        x = prepare_input(images, image_size=self.info.image_size, channels=self.info.channels)
        features, logits = self.net(x.to(next(self.net.parameters()).device))
        by_name = {"features": features, "logits": logits}
        return tuple(by_name[name] for name in self.features_list)

    @staticmethod
    def get_provided_features_list() -> tuple[str, str]:
        return "features", "logits"

    @staticmethod
    def get_default_feature_layer_for_metric(metric: str) -> str:
        return {"isc": "logits", "fid": "features", "kid": "features", "prc": "features"}[metric]

    @staticmethod
    def can_be_compiled() -> bool:
        return False

    @staticmethod
    def get_dummy_input_for_compile() -> torch.Tensor:
        return torch.zeros(1, 1, 8, 8, dtype=torch.uint8)


def register() -> None:
    """Make "ddpm-featnet" known to torch-fidelity (idempotent)."""
    if FEATNET_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
        register_feature_extractor(FEATNET_EXTRACTOR, FeatNetExtractor)


@dataclass(frozen=True)
class FeatureSpace:
    """A resolved feature space: torch-fidelity's extractor name, its weights file, and the name
    reports give it (with a hash prefix for feature networks)."""

    extractor: str
    weights_path: Path
    label: str

    def layer(self, metric: str) -> str:
        """The feature layer torch-fidelity uses for a metric: "isc", "fid", "kid" or "prc"."""
        extractor = FEATURE_EXTRACTORS_REGISTRY[self.extractor]  # torch-fidelity is untyped
        layer: str = extractor.get_default_feature_layer_for_metric(metric)
        return layer


def inception_cache_path() -> Path:
    """Where torch-fidelity's download of the Inception weights lands (torch hub's cache)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def _check_plain_state_dict(path: Path) -> None:
    """torch-fidelity unpickles the Inception file in full; refuse any file that is more than
    tensors, by loading it first with torch's safe loader."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any failure means "not a plain tensor file"
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DDPMError(f"{path} is not a plain Inception state dict ({first[:200]})") from None


def _download_inception(path: Path) -> bool:
    """Fetch torch-fidelity's Inception weights into `path`; False when there is no network."""
    try:
        with urllib.request.urlopen(INCEPTION_URL, timeout=15) as response:
            blob = response.read()
    except (OSError, ValueError):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, blob)
    return True


def resolve_feature_space(features: str, *, inception_weights: str | None = None) -> FeatureSpace:
    """ "inception" (weights from `inception_weights`, else torch hub's cache, else downloaded
    there), or a feature network by cache name or .safetensors path. Raises DDPMError saying
    what to do when a file is missing."""
    register()
    if features == "inception":
        path = Path(inception_weights) if inception_weights else inception_cache_path()
        if not path.is_file() and (inception_weights or not _download_inception(path)):
            raise DDPMError(
                f"Inception-v3 weights not found at {path} and no network to fetch them; get "
                f"{INCEPTION_URL} and pass --inception-weights FILE, or work offline with a "
                f"feature network trained on the data: `ddpm featnet train --dataset NAME`, "
                f"then `ddpm eval --features NAME`"
            )
        _check_plain_state_dict(path)
        return FeatureSpace(INCEPTION_EXTRACTOR, path, "inception-v3")
    _, info = load_featnet(features)  # by name or file; a missing one names the fix
    path = Path(features) if features.endswith(".safetensors") else featnet_path(features)
    return FeatureSpace(FEATNET_EXTRACTOR, path, info.feature_space)
