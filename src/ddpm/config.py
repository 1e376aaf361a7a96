"""Run configuration: one frozen dataclass per concern, built only at the edges.

Sources, later ones winning: dataclass defaults < preset YAML < --config YAML < --set overrides.
Unknown keys and wrong types are `DDPMError`s naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import DDPMError


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise DDPMError(message)


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?$")


def parse_duration(text: str, *, key: str = "train.time_budget") -> float:
    """ "90s", "20m", "2h", "1h30m" -> seconds (> 0); a DDPMError naming `key` else."""
    match = _DURATION.match(text.strip().lower()) if text else None
    if not match or not any(match.groups()):
        raise DDPMError(f"{key} must be a duration like 90s, 20m, 2h or 1h30m, got {text!r}")
    seconds = sum(float(v) * _UNITS[u] for v, u in zip(match.groups(), "hms") if v)
    if seconds <= 0:
        raise DDPMError(f"{key} must be > 0, got {text!r}")
    return seconds


# ddpm.samplers.SAMPLERS' names (a test keeps the two in step)
SamplerName = Literal["ddpm", "ddim", "dpmpp-2m", "dpmpp-2m-sde", "heun"]


@dataclass(frozen=True)
class DiffusionConfig:
    schedule: Literal["linear", "cosine", "quadratic", "sigmoid"] = "linear"
    num_timesteps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 0.02
    cosine_s: float = 0.008
    # edm: Karras et al. 2022's preconditioning (Table 1): the network sees c_in y and its output
    # F gives x0_hat = c_skip y + c_out F, with y = x_t / sqrt(alpha_bar) (ddpm.edm)
    prediction: Literal["eps", "x0", "v", "edm"] = "eps"
    # hybrid: L_simple + vlb_weight * L_vlb, L_vlb training only the learned variance (Nichol &
    # Dhariwal 2021, Sec. 3.1, lambda = 0.001); needs variance=learned_range
    loss: Literal["l2", "l1", "huber", "hybrid"] = "l2"
    vlb_weight: float = 0.001
    # per-t weight of the loss: none (L_simple, Ho et al. 2020), min_snr (Hang et al. 2023) or
    # edm (Karras et al. 2022: lambda(sigma) = 1 / c_out^2 on ||x0 - x0_hat||^2)
    loss_weight: Literal["none", "min_snr", "edm"] = "none"
    min_snr_gamma: float = 5.0
    # EDM's sigma_data (Karras et al. 2022, Sec. 5; 0.5 for all its datasets): the standard
    # deviation of the training images in [-1, 1], e.g. images.float().div(127.5).sub(1).std();
    # used by prediction=edm and loss_weight=edm
    sigma_data: float = 0.5
    clip_denoised: bool = True
    # the reverse step's variance: fixed beta~ or beta (Ho et al. 2020), or learned_range, which
    # interpolates them in log space with a network output (Nichol & Dhariwal 2021, Eq. 15)
    variance: Literal["beta_tilde", "beta", "learned_range"] = "beta_tilde"

    def __post_init__(self) -> None:
        _require(
            (self.loss == "hybrid") == (self.variance == "learned_range"),
            "diffusion.loss=hybrid and diffusion.variance=learned_range go together (L_vlb trains "
            "the variance)",
        )
        _require(self.vlb_weight >= 0, "diffusion.vlb_weight must be >= 0")
        _require(self.num_timesteps >= 2, "diffusion.num_timesteps must be >= 2")
        _require(
            0 < self.beta_start < self.beta_end < 1, "need 0 < diffusion.beta_start < beta_end < 1"
        )
        _require(self.min_snr_gamma > 0, "diffusion.min_snr_gamma must be > 0")
        _require(
            0 < self.sigma_data < float("inf"),
            f"diffusion.sigma_data must be a finite number > 0, got {self.sigma_data}",
        )


@dataclass(frozen=True)
class UNetConfig:
    base_channels: int = 64
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attention_resolutions: tuple[int, ...] = (16,)
    attention_head_dim: int = 32
    linear_attention: bool = False  # linear attention at the levels without full attention
    block: Literal["resnet", "convnext"] = "resnet"
    # how the time/class embedding enters a block: scale-shift of the normalised features (Dhariwal
    # & Nichol 2021) or a plain additive bias (Ho et al. 2020's original U-Net)
    conditioning: Literal["scale_shift", "additive"] = "scale_shift"
    dropout: float = 0.1
    num_groups: int = 32
    num_classes: int = 0  # > 0: class-conditional, with one extra null class for guidance
    # 6: the network takes the parameters of data.augment_p's augmentation (ddpm.augment) as
    # conditioning, a bias-free linear map added to the time embedding (Karras et al. 2022, EDM,
    # augmentation regularization); 0: no such input (and the state dict of earlier versions)
    augment_dim: int = 0

    def __post_init__(self) -> None:
        _require(0 <= self.dropout < 1, "model.dropout must be in [0, 1)")
        _require(self.augment_dim in (0, 6), "model.augment_dim must be 0 (none) or 6")
        _require(
            self.num_groups >= 1 and self.attention_head_dim >= 1,
            "model.num_groups and attention_head_dim must be >= 1",
        )


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "digits"
    data_dir: str | None = None
    image_size: int = 8
    channels: int = 1
    random_flip: bool = False
    fit: Literal["resize", "pad"] = "resize"  # how images of another size reach image_size
    download: bool = False  # MNIST/Fashion-MNIST: fetch with torchvision into the cache if absent
    # non-leaky augmentation (Karras et al. 2022, EDM, config F: 0.12 on CIFAR-10): each training
    # image is flipped, rotated by 90k degrees and shifted, each with this probability, and the
    # network is told what was done (needs model.augment_dim=6; ddpm.augment); 0: off
    augment_p: float = 0.0

    def __post_init__(self) -> None:
        _require(
            self.image_size >= 1 and self.channels >= 1, "data.image_size and channels must be >= 1"
        )
        _require(0 <= self.augment_p <= 1, "data.augment_p must be in [0, 1]")


@dataclass(frozen=True)
class TrainConfig:
    num_steps: int = 5000
    batch_size: int = 128
    lr: float = 2e-4
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = 500
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    # warmup: min(ema_decay, (1 + n) / (10 + n)); power: Karras et al. 2024's power-function EMA
    # with relative width ema_sigma_rel (its window grows with the run; ema_decay is unused)
    ema_schedule: Literal["warmup", "power"] = "warmup"
    ema_sigma_rel: float = 0.05
    seed: int = 0
    # auto: bf16 autocast where the hardware has bf16 arithmetic (CPUs with AVX512-BF16 or AMX,
    # CUDA GPUs that support it), else fp32; see ddpm.precision.resolve_precision
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    compile: bool = False
    log_every: int = 50
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    sample_every: int = 1000
    num_sample_images: int = 64
    label_dropout: float = 0.1  # class-conditional only: probability of training on the null class
    val_images: int = 256  # test images for the validation loss at each checkpoint (0: none)
    max_nonfinite_steps: int = 5  # consecutive skipped (non-finite) steps that stop the run
    # the noise levels a step visits (ddpm.noise_levels): uniform t (Ho et al. 2020), lognormal
    # sigma (Karras et al. 2022: ln sigma ~ N(p_mean, p_std^2)), laplace log-SNR (Hang et al. 2024),
    # importance: p_t ~ sqrt(E[L_vlb,t^2]) over 10 values per t, weight 1 / (T p_t) (Nichol &
    # Dhariwal 2021, Sec. 3.3; needs diffusion.loss=hybrid; ddpm.train.importance)
    t_sampling: Literal["uniform", "lognormal", "laplace", "importance"] = "uniform"
    p_mean: float = -1.2
    p_std: float = 1.2
    laplace_mu: float = 0.0
    laplace_b: float = 0.5
    # a wall-clock budget ("20m", "2h"; "" for none): the cosine decay follows the fraction of it
    # spent and the run ends when it is spent (ddpm.train.budget); num_steps stays a cap
    time_budget: str = ""
    # quality measured while training (ddpm.train.quality): every eval_every steps ("500") or
    # training minutes ("10m"; "" for never), eval_n images from eval_sampler at eval_steps,
    # scored in eval_features ("" = the feature network named after the dataset), at most
    # eval_max_fraction of the training time
    eval_every: str = ""
    eval_n: int = 1000
    eval_features: str = ""
    eval_sampler: SamplerName = "dpmpp-2m"
    eval_steps: int = 20
    eval_max_fraction: float = 0.1

    def __post_init__(self) -> None:
        for name in ("num_steps", "batch_size", "log_every", "checkpoint_every", "sample_every"):
            _require(getattr(self, name) >= 1, f"train.{name} must be >= 1")
        _require(self.lr > 0, "train.lr must be > 0")
        _require(
            self.warmup_steps >= 0 and self.grad_clip >= 0,
            "train.warmup_steps and grad_clip must be >= 0",
        )
        _require(0 <= self.ema_decay < 1, "train.ema_decay must be in [0, 1)")
        _require(0 < self.ema_sigma_rel < 0.28, "train.ema_sigma_rel must be in (0, 0.28)")
        _require(0 <= self.label_dropout <= 1, "train.label_dropout must be in [0, 1]")
        _require(self.num_sample_images >= 1, "train.num_sample_images must be >= 1")
        _require(self.val_images >= 0, "train.val_images must be >= 0")
        _require(self.max_nonfinite_steps >= 1, "train.max_nonfinite_steps must be >= 1")
        _require(self.p_std > 0 and self.laplace_b > 0, "train.p_std and laplace_b must be > 0")
        if self.time_budget:
            parse_duration(self.time_budget)
        if self.eval_every.strip().isdigit():
            _require(int(self.eval_every) >= 1, "train.eval_every must be >= 1 step or a duration")
        elif self.eval_every:
            parse_duration(self.eval_every, key="train.eval_every (steps, or a duration)")
        _require(
            self.eval_n >= 2 and self.eval_steps >= 1, "train.eval_n must be >= 2, eval_steps >= 1"
        )
        _require(self.eval_max_fraction > 0, "train.eval_max_fraction must be > 0")


@dataclass(frozen=True)
class SampleConfig:
    sampler: str = "ddim"
    steps: int = 50
    eta: float = 0.0
    spacing: Literal["uniform", "quadratic", "trailing", "karras"] = "uniform"
    batch_size: int = 256
    # the network's autocast while sampling; auto as train.precision (bf16 where it is fast)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # torch.compile the network for sampling: about a minute to compile, then faster steps; pays
    # for long sampling jobs (eval, DDPM-1000, large n); see the README, Performance
    compile: bool = False

    def __post_init__(self) -> None:
        _require(
            self.steps >= 1 and self.batch_size >= 1, "sample.steps and batch_size must be >= 1"
        )
        _require(0 <= self.eta <= 1, "sample.eta must be in [0, 1]")


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
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise DDPMError(f"unknown config section(s) {unknown}; known: {sorted(SECTIONS)}")
    return RunConfig(**sections)


def _replace_checked(section: Any, values: dict[str, Any], *, prefix: str) -> Any:
    hints = typing.get_type_hints(type(section))
    unknown = sorted(set(values) - set(hints))
    if unknown:
        raise DDPMError(
            f"unknown config key(s) {[f'{prefix}.{k}' for k in unknown]}; "
            f"known in {prefix}: {sorted(hints)}"
        )
    converted = {k: _coerce(v, hints[k], f"{prefix}.{k}") for k, v in values.items()}
    return dataclasses.replace(section, **converted)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check `value` against a type hint, converting lists to tuples and ints to floats."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        if value not in args:
            raise DDPMError(f"{key} must be one of {list(args)}, got {value!r}")
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
            raise DDPMError(f"{key} must be a list, got {value!r}")
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
        raise DDPMError(f"{key} must be true or false, got {value!r}")
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise DDPMError(f"{key} must be an integer, got {value!r}")
    if not isinstance(value, hint):
        raise DDPMError(f"{key} must be of type {hint.__name__}, got {value!r}")
    return value


def parse_overrides(pairs: list[str]) -> dict[str, dict[str, Any]]:
    """['train.lr=1e-4', 'model.channel_mult=[1,2]'] -> nested dict; values are parsed as YAML."""
    nested: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise DDPMError(f"--set expects section.key=value, got {pair!r}")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        nested.setdefault(section, {})[name] = value
    return nested


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise DDPMError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise DDPMError(
            f"config file {path} is not valid YAML: {str(error).splitlines()[0]}"
        ) from None
    if not isinstance(data, dict):
        raise DDPMError(f"config file {path} must hold a mapping of sections")
    return data


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
    return from_dict(yaml.safe_load(text) or {})


def diff_keys(old: RunConfig, new: RunConfig) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    a, b = to_dict(old), to_dict(new)
    return [f"{s}.{k}" for s in a for k in a[s] if a[s][k] != b[s][k]]
