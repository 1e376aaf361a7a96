from .dropout import DropoutNoise, SeededDropout, set_dropout_noise
from .unet import UNet, build_unet

__all__ = [
    "DropoutNoise",
    "SeededDropout",
    "UNet",
    "build_unet",
    "set_dropout_noise",
]
