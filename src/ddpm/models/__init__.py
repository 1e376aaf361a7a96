from .dropout import DropoutNoise, SeededDropout, set_dropout_noise
from .unet import UNet, build_unet, check_unet_config

__all__ = [
    "DropoutNoise",
    "SeededDropout",
    "UNet",
    "build_unet",
    "check_unet_config",
    "set_dropout_noise",
]
