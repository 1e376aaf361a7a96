"""Run configuration: one frozen dataclass per concern, built only at the edges.

Sources, later ones winning: dataclass defaults < preset YAML < --config YAML < --set overrides
(read by ddpm.config_yaml). Unknown keys, wrong types and values out of a field's range
(ddpm.config_bounds: declared in the field's type, checked whenever a section is built) are
`DDPMError`s naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from typing import Annotated, Any, Literal

from .config_bounds import (
    Bounds,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Probability,
    Seed,
    check_fields,
)
from .config_yaml import load_yaml, parse_overrides, parse_yaml  # noqa: F401 (re-exported)
from .errors import DDPMError, shorten


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
    # deviation of the training images in [-1, 1], e.g. images.float().div(127.5).sub(1).std();
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
    base_channels: PositiveInt = 64
    channel_mult: tuple[PositiveInt, ...] = (1, 2, 2, 2)
    num_res_blocks: PositiveInt = 2
    attention_resolutions: tuple[PositiveInt, ...] = (16,)
    attention_head_dim: PositiveInt = 32
    linear_attention: bool = False  # linear attention at the levels without full attention
    block: Literal["resnet", "convnext"] = "resnet"
    # how the time/class embedding enters a block: scale-shift of the normalised features (Dhariwal
    # & Nichol 2021) or a plain additive bias (Ho et al. 2020's original U-Net)
    conditioning: Literal["scale_shift", "additive"] = "scale_shift"
    dropout: Annotated[float, Bounds(ge=0, lt=1)] = 0.1
    num_groups: PositiveInt = 32
    # > 0: class-conditional, with one extra null class for guidance
    num_classes: NonNegativeInt = 0
    # 6: the network takes the parameters of data.augment_p's augmentation (ddpm.augment) as
    # conditioning, a bias-free linear map added to the time embedding (Karras et al. 2022, EDM,
    # augmentation regularization); 0: no such input (and the state dict of earlier versions)
    augment_dim: int = 0

    def __post_init__(self) -> None:
        check_fields(self, "model")
        _require(self.augment_dim in (0, 6), "model.augment_dim must be 0 (none) or 6")


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"
    data_dir: str | None = None
    image_size: PositiveInt = 8
    channels: PositiveInt = 1
    random_flip: bool = False
    fit: Literal["resize", "pad"] = "resize"  # how images of another size reach image_size
    download: bool = False  # MNIST/Fashion-MNIST: fetch with torchvision into the cache if absent
    # non-leaky augmentation (Karras et al. 2022, EDM, config F: 0.12 on CIFAR-10): each training
    # image is flipped, rotated by 90k degrees and shifted, each with this probability, and the
    # network is told what was done (needs model.augment_dim=6; ddpm.augment); 0: off
    augment_p: Probability = 0.0

    def __post_init__(self) -> None:
        check_fields(self, "data")


@dataclass(frozen=True)
class TrainConfig:
    num_steps: PositiveInt = 5000
    batch_size: PositiveInt = 128
    lr: PositiveFloat = 2e-4
    lr_schedule: Literal["constant", "cosine"] = "constant"
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
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False
    log_every: PositiveInt = 50
    checkpoint_every: PositiveInt = 1000
    keep_checkpoints: NonNegativeInt = 3  # 0: keep all
    sample_every: PositiveInt = 1000
    num_sample_images: PositiveInt = 64
    label_dropout: Probability = 0.1  # class-conditional only: probability of the null class
    val_images: NonNegativeInt = 256  # test images for the validation loss at each checkpoint
    max_nonfinite_steps: PositiveInt = 5  # consecutive skipped (non-finite) steps: run stops
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
    eval_every: str = ""
    eval_n: Annotated[int, Bounds(ge=2)] = 1000
    eval_features: str = ""
    eval_sampler: SamplerName = "dpmpp-2m"
    eval_steps: PositiveInt = 20
    eval_max_fraction: PositiveFloat = 0.1

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
    sampler: SamplerName = "ddim"
    steps: PositiveInt = 50  # at most diffusion.num_timesteps
    eta: Probability = 0.0
    spacing: Literal["uniform", "quadratic", "trailing", "karras"] = "uniform"
    batch_size: PositiveInt = 256
    # the network's autocast while sampling; auto as train.precision (bf16 where it is fast)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # torch.compile the network for sampling: about a minute to compile, then faster steps; pays
    # for long sampling jobs (eval, DDPM-1000, large n); see the README, Performance
    compile: bool = False

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


SECTIONS = {f.name: f.type for f in dataclasses.fields(RunConfig)}
# Keys that may change when a run resumes: they do not alter the model or what was trained so far.
RESUMABLE_KEYS = {
    "train.batch_size",
    "train.val_images",
    "train.max_nonfinite_steps",
    "train.num_steps",
    "train.lr",  # an explicit change of the rate from the resumed step on (logged)
    "train.lr_schedule",
    "train.eval_every",
    "train.eval_n",
    "train.eval_features",
    "train.eval_sampler",
    "train.eval_steps",
    "train.eval_max_fraction",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.sample_every",
    "train.num_sample_images",
    "train.compile",
    "data.data_dir",
    "sample.sampler",
    "sample.steps",
    "sample.eta",
    "sample.spacing",
    "sample.batch_size",
    "sample.precision",
    "sample.compile",
}


def to_dict(config: RunConfig) -> dict[str, dict[str, Any]]:
    """Plain nested dict (tuples become lists), suitable for JSON."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def from_dict(data: dict[str, Any], base: RunConfig | None = None) -> RunConfig:
    """Build a RunConfig from a nested dict over `base` (default: all defaults); strict."""
    base = base or RunConfig()
    if not isinstance(data, dict):
        raise DDPMError(
            "a config must be a mapping of sections (diffusion, model, data, train, sample)"
        )
    sections = {}
    for name in SECTIONS:
        section = getattr(base, name)
        values = data.get(name) or {}
        if not isinstance(values, dict):
            raise DDPMError(f"config section {name!r} must be a mapping")
        sections[name] = _replace_checked(section, values, prefix=name)
    unknown = sorted(map(str, set(data) - set(SECTIONS)))
    if unknown:
        raise DDPMError(f"unknown config section(s) {_few(unknown)}; known: {sorted(SECTIONS)}")
    return RunConfig(**sections)


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
    converted = {k: _coerce(v, hints[k], f"{prefix}.{k}") for k, v in values.items()}
    return dataclasses.replace(section, **converted)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against a type hint, converting lists to tuples and ints to floats."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        if value not in args:
            raise DDPMError(f"{key} must be one of {list(args)}, got {shorten(value)}")
        return value
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is tuple:
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise DDPMError(f"{key} must be a list, got {shorten(value)}")
        return tuple(_coerce(v, args[0], key) for v in value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint is str and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # a count of steps in a key that also takes a duration ("500", "10m")
    if hint is bool and not isinstance(value, bool):
        raise DDPMError(f"{key} must be true or false, got {shorten(value)}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise DDPMError(f"{key} must be an integer, got {shorten(value)}")
    if not isinstance(value, hint):
        raise DDPMError(f"{key} must be of type {hint.__name__}, got {shorten(value)}")
    return value


def preset_names() -> list[str]:
    folder = resources.files("ddpm") / "presets"
    return sorted(
        p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")
    )


def load_preset(name: str) -> RunConfig:
    """The shipped preset `name` (src/ddpm/presets/NAME.yaml) over the defaults."""
    if name not in preset_names():
        raise DDPMError(f"unknown preset {name!r}; known: {', '.join(preset_names())}")
    text = (resources.files("ddpm") / "presets" / f"{name}.yaml").read_text()
    return from_dict(parse_yaml(text, source=f"preset {name}") or {})


def diff_keys(old: RunConfig, new: RunConfig) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    a, b = to_dict(old), to_dict(new)
    return [f"{s}.{k}" for s in a for k in a[s] if a[s][k] != b[s][k]]
