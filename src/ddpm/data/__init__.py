from ..rng import seeded_generator, step_generator  # re-exported: their old home
from .batches import InMemoryBatches
from .dataset import DATASETS, ImageData, check_labels, load_dataset

__all__ = [
    "DATASETS",
    "ImageData",
    "InMemoryBatches",
    "check_labels",
    "load_dataset",
    "seeded_generator",
    "step_generator",
]
