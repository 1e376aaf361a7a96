from .batches import InMemoryBatches
from .dataset import DATASETS, check_labels, load_dataset
from .image_data import ImageData

__all__ = [
    "DATASETS",
    "ImageData",
    "InMemoryBatches",
    "check_labels",
    "load_dataset",
]
