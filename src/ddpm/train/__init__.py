from .ema import ema_decay_at, update_ema
from .loop import TrainResult, train
from .step import Trainer, lr_at, make_trainer

__all__ = [
    "TrainResult",
    "Trainer",
    "ema_decay_at",
    "lr_at",
    "make_trainer",
    "train",
    "update_ema",
]
