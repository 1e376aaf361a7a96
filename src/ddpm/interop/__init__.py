"""Weights that travel: a run exported as a diffusers pipeline folder (UNet2DModel +
DDPMScheduler, written with safetensors and JSON only: diffusers is never imported) or as a
ddpm weights file, and a diffusers UNet2DModel imported as a ddpm run (docs/interop.md).

export.py: `export_diffusers`, `export_weights`; import_diffusers.py: `import_diffusers`;
diffusers_names.py: the parameter names; diffusers_unet.py and diffusers_scheduler.py: the
configs both ways, with what cannot be represented refused by name.
"""

from .export import export_diffusers, export_weights
from .import_diffusers import import_diffusers

__all__ = ["export_diffusers", "export_weights", "import_diffusers"]
