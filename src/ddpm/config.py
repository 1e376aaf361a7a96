"""Run configuration: one frozen dataclass per concern, built only at the edges.

Sources, later ones winning: dataclass defaults < preset YAML < --config YAML < --set overrides
(read by ddpm.config_yaml). Unknown keys, wrong types and values out of a field's range
(ddpm.config_bounds: declared in the field's type, checked whenever a section is built) are
`DDPMError`s naming the key. The defaults form a valid run: the embedded 8x8 digits with a U-Net
for them (RunConfig checks the U-Net against data.image_size and data.channels).

The sections live here together, not each beside the code it configures (as nanoGPT keeps GPTConfig
beside GPT), on purpose: this module is the configuration reference (every key `--set` reaches,
with its type, bound, default and why, in one file); the sections check one another (the U-Net
against the image size, sample.steps against diffusion.num_timesteps, augment_p against
augment_dim); and it imports no torch and no ddpm module but its bounds, YAML reader and errors,
so the model, data, training and sampling code can all import it without an import cycle.
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Annotated, Any, Literal

from .config_auto import AUTO_KEYS, auto_unet_keys
from .config_bounds import (
    Bounds,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
    Seed,
    check_fields,
    coerce,
)
from .config_yaml import parse_yaml
from .errors import DDPMError, shorten

# field metadata of the keys `ddpm train --resume` lets change (RESUMABLE_KEYS); a field without it
# is fixed for the run's life (tests/test_resume_keys.py makes every new field choose)
RESUMABLE: Mapping[str, bool] = MappingProxyType({"resumable": True})


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise DDPMError(message)


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(text: str, *, key: str = "train.time_budget") -> float:
    """ "90s", "20m", "2h", "1h30m" -> seconds (> 0); a DDPMError naming `key` else."""
    match = _DURATION.match(text.strip().lower()) if text else None
    if not match or not any(match.groups()):
        raise DDPMError(f"{key} must be a duration like 90s, 20m, 2h or 1h30m, got {shorten(text)}")
    seconds = sum(float(v) * _UNITS[u] for v, u in zip(match.groups(), "hms") if v)
    if seconds <= 0:
        raise DDPMError(f"{key} must be > 0, got {shorten(text)}")
    return seconds


# ddpm.samplers.SAMPLERS' names (a test keeps the two in step)
SamplerName = Literal["ddpm", "ddim", "dpmpp-2m", "dpmpp-2m-sde", "heun"]
# the network's autocast: ddpm.precision.PRECISIONS (a test keeps the two in step)
Precision = Literal["auto", "fp32", "bf16", "fp16"]
# schedules, timestep tables and the importance sampler's history hold T entries; a million-step
# chain is no better than a thousand-step one (Ho et al. 2020 use T = 1000) and costs memory
MAX_TIMESTEPS = 100_000
UnitInterval = Annotated[float, Bounds(gt=0, lt=1)]


@dataclass(frozen=True)
class DiffusionConfig:
    schedule: Literal["linear", "cosine", "quadratic", "sigmoid"] = "linear"
    num_timesteps: Annotated[int, Bounds(ge=2, le=MAX_TIMESTEPS)] = 1000
    beta_start: UnitInterval = 1e-4
    beta_end: UnitInterval = 0.02
    cosine_s: NonNegativeFloat = 0.008
    # edm: Karras et al. 2022's preconditioning (Table 1): the network sees c_in y and its output
    # F gives x0_hat = c_skip y + c_out F, with y = x_t / sqrt(alpha_bar) (ddpm.edm)
    prediction: Literal["eps", "x0", "v", "edm"] = "eps"
    # hybrid: L_simple + vlb_weight * L_vlb, L_vlb training only the learned variance (Nichol &
    # Dhariwal 2021, Sec. 3.1, lambda = 0.001); needs variance=learned_range
    loss: Literal["l2", "l1", "huber", "hybrid"] = "l2"
    vlb_weight: NonNegativeFloat = 0.001
    # per-t weight of the loss: none (L_simple, Ho et al. 2020), min_snr (Hang et al. 2023) or
    # edm (Karras et al. 2022: lambda(sigma) = 1 / c_out^2 on ||x0 - x0_hat||^2)
    loss_weight: Literal["none", "min_snr", "edm"] = "none"
    min_snr_gamma: PositiveFloat = 5.0
    # EDM's sigma_data (Karras et al. 2022, Sec. 5; 0.5 for all its datasets): the standard
    # deviation of the training images in [-1, 1], e.g. ddpm.pixels.from_uint8(images).std();
    # used by prediction=edm and loss_weight=edm
    sigma_data: PositiveFloat = 0.5
    clip_denoised: bool = True
    # the reverse step's variance: fixed beta~ or beta (Ho et al. 2020), or learned_range, which
    # interpolates them in log space with a network output (Nichol & Dhariwal 2021, Eq. 15)
    variance: Literal["beta_tilde", "beta", "learned_range"] = "beta_tilde"

    def __post_init__(self) -> None:
        check_fields(self, "diffusion")
        _require(
            (self.loss == "hybrid") == (self.variance == "learned_range"),
            "diffusion.loss=hybrid and diffusion.variance=learned_range go together (L_vlb trains "
            "the variance)",
        )
        _require(self.beta_start < self.beta_end, "need 0 < diffusion.beta_start < beta_end < 1")


@dataclass(frozen=True)
class UNetConfig:
    # auto: the architecture keys (ddpm.config_auto.AUTO_KEYS) come from one rule for
    # data.image_size (ddpm.config_auto), except those given beside it in the same config layer
    preset: Literal["manual", "auto"] = "manual"
    # the defaults are the network of the default data (the 8x8 digits): two levels, 8x8 and 4x4
    base_channels: PositiveInt = 32
    channel_mult: tuple[PositiveInt, ...] = (1, 2)
    num_res_blocks: PositiveInt = 1
    attention_resolutions: tuple[PositiveInt, ...] = (4,)
    attention_head_dim: PositiveInt = 32
    linear_attention: bool = False  # linear attention at the levels without full attention
    block: Literal["resnet", "convnext"] = "resnet"
    # how the time/class embedding enters a block: scale-shift of the normalised features (Dhariwal
    # & Nichol 2021) or a plain additive bias (Ho et al. 2020's original U-Net)
    conditioning: Literal["scale_shift", "additive"] = "scale_shift"
    dropout: Annotated[float, Bounds(ge=0, lt=1)] = 0.0
    num_groups: PositiveInt = 8
    # > 0: class-conditional, with one extra null class for guidance
    num_classes: NonNegativeInt = 0
    # 6: the network takes the parameters of data.augment_p's augmentation (ddpm.augment) as
    # conditioning, a bias-free linear map added to the time embedding (Karras et al. 2022, EDM,
    # augmentation regularization); 0: no such input (and the state dict of earlier versions)
    augment_dim: int = 0

    def __post_init__(self) -> None:
        check_fields(self, "model")
        _require(self.augment_dim in (0, 6), "model.augment_dim must be 0 (none) or 6")


def check_unet_config(config: UNetConfig, *, image_size: int, in_channels: int) -> None:
    """Raise DDPMError if the U-Net cannot take images of this size and channel count: each level
    halves the image evenly, attention sits at resolutions the net has, widths divide into groups.
    RunConfig checks it for data.image_size and data.channels; ddpm.models.UNet again for its own."""
    levels = len(config.channel_mult)
    factor = 2 ** (levels - 1)
    if levels < 1 or min(config.channel_mult) < 1 or config.base_channels < 1:
        raise DDPMError("model.channel_mult and model.base_channels must be positive")
    if image_size < factor or image_size % factor:
        raise DDPMError(
            f"image size {image_size} cannot be halved {levels - 1} times evenly for "
            f"model.channel_mult={list(config.channel_mult)}; use a multiple of {factor}, "
            f"fewer levels, or model.preset=auto"
        )
    resolutions = {image_size // 2**i for i in range(levels)}
    bad = sorted(set(config.attention_resolutions) - resolutions)
    if bad:
        raise DDPMError(
            f"model.attention_resolutions {bad} are not resolutions of this U-Net "
            f"(it has {sorted(resolutions, reverse=True)}): set some of those, or "
            f"model.preset=auto for a U-Net sized for {image_size}x{image_size} images"
        )
    for mult in config.channel_mult:
        if (config.base_channels * mult) % config.num_groups:
            raise DDPMError(
                f"model.base_channels * channel_mult ({config.base_channels * mult}) "
                f"must be divisible by model.num_groups ({config.num_groups})"
            )
    if in_channels < 1 or config.num_res_blocks < 1 or config.num_classes < 0:
        raise DDPMError("channels and model.num_res_blocks must be >= 1, num_classes >= 0")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"
    data_dir: str | None = field(default=None, metadata=RESUMABLE)
    image_size: PositiveInt = 8
    channels: PositiveInt = 1
    random_flip: bool = False
    fit: Literal["resize", "pad"] = "resize"  # how images of another size reach image_size
    # folder dataset: the first-level sub-folder names (sorted) are the class labels
    labels_from_subfolders: bool = False
    download: bool = False  # MNIST/Fashion-MNIST: fetch with torchvision into the cache if absent
    # non-leaky augmentation (Karras et al. 2022, EDM, config F: 0.12 on CIFAR-10): each training
    # image is flipped, rotated by 90k degrees and shifted, each with this probability, and the
    # network is told what was done (needs model.augment_dim=6; ddpm.augment); 0: off
    augment_p: Probability = 0.0

    def __post_init__(self) -> None:
        check_fields(self, "data")


@dataclass(frozen=True)
class TrainConfig:
    num_steps: PositiveInt = field(default=5000, metadata=RESUMABLE)
    batch_size: PositiveInt = field(default=128, metadata=RESUMABLE)
    # resumable: an explicit change of the rate from the resumed step on (logged)
    lr: PositiveFloat = field(default=2e-4, metadata=RESUMABLE)
    lr_schedule: Literal["constant", "cosine"] = field(default="constant", metadata=RESUMABLE)
    warmup_steps: NonNegativeInt = 500
    weight_decay: NonNegativeFloat = 0.0
    grad_clip: NonNegativeFloat = 1.0  # 0: no clipping
    ema_decay: Annotated[float, Bounds(ge=0, lt=1)] = 0.9999
    # warmup: min(ema_decay, (1 + n) / (10 + n)); power: Karras et al. 2024's power-function EMA
    # with relative width ema_sigma_rel (its window grows with the run; ema_decay is unused)
    ema_schedule: Literal["warmup", "power"] = "warmup"
    ema_sigma_rel: Annotated[float, Bounds(gt=0, lt=0.28)] = 0.05
    seed: Seed = 0
    # auto: bf16 autocast where the hardware has bf16 arithmetic (CPUs with AVX512-BF16 or AMX,
    # CUDA GPUs that support it), else fp32; see ddpm.precision.resolve_precision
    precision: Precision = "auto"
    compile: bool = field(default=False, metadata=RESUMABLE)
    log_every: PositiveInt = field(default=50, metadata=RESUMABLE)
    checkpoint_every: PositiveInt = field(default=1000, metadata=RESUMABLE)
    keep_checkpoints: NonNegativeInt = field(default=3, metadata=RESUMABLE)  # 0: keep all
    sample_every: PositiveInt = field(default=1000, metadata=RESUMABLE)
    num_sample_images: PositiveInt = field(default=64, metadata=RESUMABLE)
    label_dropout: Probability = 0.1  # class-conditional only: probability of the null class
    # test images for the validation loss at each checkpoint
    val_images: NonNegativeInt = field(default=256, metadata=RESUMABLE)
    # consecutive skipped (non-finite) steps: run stops
    max_nonfinite_steps: PositiveInt = field(default=5, metadata=RESUMABLE)
    # the noise levels a step visits (ddpm.noise_levels): uniform t (Ho et al. 2020), lognormal
    # sigma (Karras et al. 2022: ln sigma ~ N(p_mean, p_std^2)), laplace log-SNR (Hang et al. 2024),
    # importance: p_t ~ sqrt(E[L_vlb,t^2]) over 10 values per t, weight 1 / (T p_t) (Nichol &
    # Dhariwal 2021, Sec. 3.3; needs diffusion.loss=hybrid; ddpm.train.importance)
    t_sampling: Literal["uniform", "lognormal", "laplace", "importance"] = "uniform"
    p_mean: float = -1.2
    p_std: PositiveFloat = 1.2
    laplace_mu: float = 0.0
    laplace_b: PositiveFloat = 0.5
    # a wall-clock budget ("20m", "2h"; "" for none): the cosine decay follows the fraction of it
    # spent and the run ends when it is spent (ddpm.train.budget); num_steps stays a cap
    time_budget: str = ""
    # quality measured while training (ddpm.train.quality): every eval_every steps ("500") or
    # training minutes ("10m"; "" for never), eval_n images from eval_sampler at eval_steps,
    # scored in eval_features ("" = the feature network named after the dataset), at most
    # eval_max_fraction of the training time
    eval_every: str = field(default="", metadata=RESUMABLE)
    eval_n: Annotated[int, Bounds(ge=2)] = field(default=1000, metadata=RESUMABLE)
    eval_features: str = field(default="", metadata=RESUMABLE)
    eval_sampler: SamplerName = field(default="dpmpp-2m", metadata=RESUMABLE)
    eval_steps: PositiveInt = field(default=20, metadata=RESUMABLE)
    eval_max_fraction: PositiveFloat = field(default=0.1, metadata=RESUMABLE)
    # rewrite RUN/report.html (ddpm.report) at each checkpoint: no sampling, a fraction of a second
    report: bool = field(default=True, metadata=RESUMABLE)
    # log scalars and sample grids to RUN/tensorboard/ (needs the tensorboard package)
    tensorboard: bool = field(default=False, metadata=RESUMABLE)

    def __post_init__(self) -> None:
        check_fields(self, "train")
        if self.time_budget:
            parse_duration(self.time_budget)
        if self.eval_every.strip().isdigit():
            steps = self.eval_every.strip()  # int() refuses over 4300 digits: check the length
            _require(
                len(steps) < 19 and int(steps) >= 1,
                f"train.eval_every must be 1 to 2**63 - 1 steps or a duration, got {steps[:30]}",
            )
        elif self.eval_every:
            parse_duration(self.eval_every, key="train.eval_every (steps, or a duration)")


@dataclass(frozen=True)
class SampleConfig:
    # the one default of every command that samples (sample, eval, sweep, report): DPM-Solver++
    # (Lu et al. 2022) at 20 steps, 20 network evaluations
    sampler: SamplerName = field(default="dpmpp-2m", metadata=RESUMABLE)
    steps: PositiveInt = field(default=20, metadata=RESUMABLE)  # at most diffusion.num_timesteps
    eta: Probability = field(default=0.0, metadata=RESUMABLE)
    spacing: Literal["uniform", "quadratic", "trailing", "karras"] = field(
        default="uniform", metadata=RESUMABLE
    )
    batch_size: PositiveInt = field(default=256, metadata=RESUMABLE)
    # the network's autocast while sampling; auto as train.precision (bf16 where it is fast)
    precision: Precision = field(default="auto", metadata=RESUMABLE)
    # torch.compile the network for sampling: about a minute to compile, then faster steps; pays
    # for long sampling jobs (eval, DDPM-1000, large n); see the README, Performance
    compile: bool = field(default=False, metadata=RESUMABLE)
    # classifier-free guidance scale when a class is asked for (ddpm sample --class N): the
    # output is null + guidance (cond - null); 1 is plain conditional sampling
    guidance: NonNegativeFloat = field(default=1.0, metadata=RESUMABLE)

    def __post_init__(self) -> None:
        check_fields(self, "sample")


@dataclass(frozen=True)
class RunConfig:
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    model: UNetConfig = field(default_factory=UNetConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def __post_init__(self) -> None:
        check_unet_config(
            self.model, image_size=self.data.image_size, in_channels=self.data.channels
        )
        _require(
            self.data.augment_p == 0 or self.model.augment_dim == 6,
            "data.augment_p > 0 needs model.augment_dim=6 (the augmentation's conditioning)",
        )
        _require(
            self.train.t_sampling != "importance" or self.diffusion.loss == "hybrid",
            "train.t_sampling=importance needs diffusion.loss=hybrid (it samples t for the L_vlb "
            "term)",
        )
        # a sampler visits at most every timestep once; train.eval_steps only counts when the
        # quality is measured (train.eval_every), so a short chain keeps its default
        steps = [("sample.steps", self.sample.steps)]
        steps += [("train.eval_steps", self.train.eval_steps)] if self.train.eval_every else []
        for key, value in steps:
            _require(
                value <= self.diffusion.num_timesteps,
                f"{key} must be at most diffusion.num_timesteps "
                f"({self.diffusion.num_timesteps}), got {value}",
            )


# section name -> its dataclass, e.g. "model" -> UNetConfig
SECTIONS: dict[str, type[Any]] = {
    name: type(section) for name, section in vars(RunConfig()).items()
}
# Keys that may change when a run resumes (the fields marked RESUMABLE): they do not alter the model
# or what was trained so far.
RESUMABLE_KEYS = frozenset(
    f"{section}.{f.name}"
    for section, cls in SECTIONS.items()
    for f in dataclasses.fields(cls)
    if f.metadata.get("resumable")
)


def to_dict(config: RunConfig) -> dict[str, dict[str, Any]]:
    """Plain nested dict (tuples become lists), suitable for JSON."""
    plain: dict[str, dict[str, Any]] = json.loads(json.dumps(dataclasses.asdict(config)))
    return plain


def from_dict(data: dict[str, Any], base: RunConfig | None = None) -> RunConfig:
    """Build a RunConfig from a nested dict over `base` (default: all defaults); strict."""
    base = base or RunConfig()
    if not isinstance(data, dict):
        raise DDPMError(
            "a config must be a mapping of sections (diffusion, model, data, train, sample)"
        )
    unknown = sorted(map(str, set(data) - set(SECTIONS)))
    if unknown:
        raise DDPMError(f"unknown config section(s) {_few(unknown)}; known: {sorted(SECTIONS)}")
    data = _labels_of_earlier_folder_runs(data)
    sections = {}
    for name in SECTIONS:
        values = data.get(name) or {}
        if not isinstance(values, dict):
            raise DDPMError(f"config section {name!r} must be a mapping")
        sections[name] = _replace_checked(getattr(base, name), values, prefix=name)
    model_values, data_values = data.get("model") or {}, data.get("data") or {}
    if sections["model"].preset == "auto" and (
        "preset" in model_values or "image_size" in data_values
    ):
        # the rule's keys for this layer's image size, then the keys this layer gives beside it
        auto = auto_unet_keys(sections["data"].image_size)
        chosen = {**auto, **{k: v for k, v in model_values.items() if k in AUTO_KEYS}}
        sections["model"] = _replace_checked(sections["model"], chosen, prefix="model")
    return RunConfig(**sections)


def _labels_of_earlier_folder_runs(data: dict[str, Any]) -> dict[str, Any]:
    """A config that names the folder dataset and a class-conditional model but not
    data.labels_from_subfolders (one saved before that key existed, when a folder's sub-folders
    were always its classes) keeps its labels, so such a run resumes and scores as it trained."""
    section, model = data.get("data"), data.get("model")
    if not (isinstance(section, dict) and isinstance(model, dict)):
        return data
    conditional = isinstance(model.get("num_classes"), int) and model["num_classes"] > 0
    if (
        section.get("dataset") == "folder"
        and conditional
        and "labels_from_subfolders" not in section
    ):
        return {**data, "data": {**section, "labels_from_subfolders": True}}
    return data


def _few(names: list[str], limit: int = 5) -> str:
    """'[a, b, c] and 12 more', each name cut short: a hostile config may hold thousands."""
    shown = ", ".join(shorten(n, 60) for n in names[:limit])
    return f"[{shown}]" + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _replace_checked(section: Any, values: dict[str, Any], *, prefix: str) -> Any:
    hints = typing.get_type_hints(type(section))
    unknown = sorted(map(str, set(values) - set(hints)))
    if unknown:
        raise DDPMError(
            f"unknown config key(s) {_few([f'{prefix}.{k}' for k in unknown])}; "
            f"known in {prefix}: {sorted(hints)}"
        )
    converted = {k: coerce(v, hints[k], f"{prefix}.{k}") for k, v in values.items()}
    return dataclasses.replace(section, **converted)


def preset_names() -> list[str]:
    folder = resources.files("ddpm") / "presets"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def load_preset(name: str) -> RunConfig:
    """The shipped preset `name` (src/ddpm/presets/NAME.yaml) over the defaults, or over the
    preset its `extends: OTHER` line names (the class-conditional presets extend their dataset's)."""
    if name not in preset_names():
        raise DDPMError(f"unknown preset {name!r}; known: {', '.join(preset_names())}")
    text = (resources.files("ddpm") / "presets" / f"{name}.yaml").read_text()
    layer = dict(parse_yaml(text, source=f"preset {name}") or {})
    parent = layer.pop("extends", None)
    return from_dict(layer, base=None if parent is None else load_preset(parent))


def diff_keys(old: RunConfig, new: RunConfig) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    a, b = to_dict(old), to_dict(new)
    return [f"{s}.{k}" for s in a for k in a[s] if a[s][k] != b[s][k]]
