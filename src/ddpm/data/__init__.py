from .batches import InMemoryBatches, seeded_generator, step_generator
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
