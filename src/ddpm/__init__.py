"""ddpm: train denoising diffusion probabilistic models on images, sample fast, measure honestly."""

from .builders import build_model, build_schedule
from .config import (
    DataConfig,
    DiffusionConfig,
    RunConfig,
    SampleConfig,
    TrainConfig,
    UNetConfig,
    from_dict,
    load_preset,
)
from .denoiser import make_denoiser, make_variance_denoiser
from .devices import resolve_device
from .editing import edit, inpaint
from .errors import DDPMError
from .generate import generate, sample_config
from .initial_noise import initial_noise
from .interpolate import interpolation_noise, slerp
from .loaded_run import LoadedRun, load_run
from .models import UNet, build_unet
from .pixels import from_uint8, to_uint8
from .samplers import (
    SAMPLERS,
    StepInfo,
    num_function_evals,
    sample_ancestral,
    sample_ddim,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_heun,
)
from .schedules import (
    Schedule,
    karras_timesteps,
    make_schedule,
    sampling_timesteps,
)
from .train import train
from .viz import save_grid

__version__ = "0.1.0"
__all__ = [
    "DDPMError",
    "DataConfig",
    "DiffusionConfig",
    "LoadedRun",
    "RunConfig",
    "SAMPLERS",
    "SampleConfig",
    "Schedule",
    "StepInfo",
    "TrainConfig",
    "UNet",
    "UNetConfig",
    "build_model",
    "build_schedule",
    "build_unet",
    "edit",
    "from_dict",
    "from_uint8",
    "generate",
    "initial_noise",
    "inpaint",
    "interpolation_noise",
    "karras_timesteps",
    "load_preset",
    "load_run",
    "make_denoiser",
    "make_variance_denoiser",
    "make_schedule",
    "num_function_evals",
    "resolve_device",
    "sample_ancestral",
    "sample_ddim",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_config",
    "sample_heun",
    "sampling_timesteps",
    "save_grid",
    "slerp",
    "to_uint8",
    "train",
]
