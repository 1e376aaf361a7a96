from ..config import check_unet_config  # re-exported: where a reader of the model looks for it
from .dropout import DropoutNoise, SeededDropout, set_dropout_noise
from .unet import UNet, build_unet

__all__ = [
    "DropoutNoise",
    "SeededDropout",
    "UNet",
    "build_unet",
    "check_unet_config",
    "set_dropout_noise",
]
