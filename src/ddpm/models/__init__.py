from .unet import UNet, build_unet, check_unet_config

__all__ = ["UNet", "build_unet", "check_unet_config"]
