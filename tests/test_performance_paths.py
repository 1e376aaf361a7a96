"""The fast paths compute what the plain fp32 eager path computes: bf16 autocast and
channels_last in sampling, one network call per guided step, cached EMA lists, "auto" precision.
(Speed itself is measured by benchmarks/compare.py and `ddpm bench`, never asserted here.)"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from ddpm.builders import build_model, build_schedule
from ddpm.config import from_dict
from ddpm.denoiser import make_denoiser
from ddpm.precision import has_fast_bf16, resolve_precision
from ddpm.samplers import DETERMINISTIC_SAMPLERS, SAMPLERS, sample_ddim
from ddpm.schedules import sampling_timesteps
from ddpm.train.ema import ema_tensor_lists, lerp_ema, update_ema

CONFIG = from_dict(
    {
        "model": {"base_channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1,
                  "attention_resolutions": [4], "num_groups": 4, "dropout": 0.0,
                  "num_classes": 3},
        "data": {"image_size": 8, "channels": 3},
    }
)  # fmt: skip


def random_net(seed: int = 0) -> torch.nn.Module:
    """The tiny U-Net with every weight random (zero-initialised output layers would make any two
    paths agree trivially)."""
    torch.manual_seed(seed)
    net = build_model(CONFIG)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return net.eval()


def ddim(net: torch.nn.Module, precision: str, **kwargs) -> torch.Tensor:
    schedule = build_schedule(CONFIG)
    x_T = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    denoiser = make_denoiser(net, schedule, prediction="eps", precision=precision, **kwargs)
    with torch.inference_mode():
        return sample_ddim(denoiser, x_T, schedule, sampling_timesteps(schedule, 10, "uniform"))


@pytest.mark.slow
def test_channels_last_gives_the_fp32_result():
    plain = random_net()
    fast = copy.deepcopy(plain).use_memory_format(torch.channels_last)
    assert fast.conv_out.weight.is_contiguous(memory_format=torch.channels_last)
    x, t = torch.randn(4, 3, 8, 8), torch.tensor([0, 10, 500, 999])
    with torch.no_grad():
        assert torch.allclose(fast(x, t), plain(x, t), atol=1e-5)
    assert torch.allclose(ddim(fast, "fp32"), ddim(plain, "fp32"), atol=1e-5)


@pytest.mark.slow
def test_bf16_channels_last_samples_match_fp32_eager_samples():
    """The optimised sampling path (bf16 autocast, channels_last) against fp32 eager, same seed,
    DDIM-10 in [-1, 1]: bf16 keeps 8 mantissa bits (relative rounding 2^-9 = 0.2%) in every
    convolution. Tolerance: at most 0.25 for any pixel and 0.005 on average (1/8 and 1/400 of
    the data range; measured: 0.099 and 0.0006), where another network's samples differ from
    these by 0.23 on average."""
    plain = random_net()
    fast = copy.deepcopy(plain).use_memory_format(torch.channels_last)
    reference, optimised = ddim(plain, "fp32"), ddim(fast, "bf16")
    other_net = ddim(random_net(seed=1), "fp32")
    error = (optimised - reference).abs()
    assert error.max() < 0.25 and error.mean() < 0.005, (error.max(), error.mean())
    assert (other_net - reference).abs().mean() > 0.1


@pytest.mark.slow
def test_guided_sampling_calls_the_network_once_per_step_with_both_halves():
    net, calls = random_net(), []

    def counting(x, t, labels):
        calls.append(labels.clone())
        return net(x, t, labels)

    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    ddim(counting, "fp32", labels=labels, null_label=net.null_label, guidance=3.0)
    assert len(calls) == 10
    assert all(torch.equal(c, torch.cat([labels, torch.full_like(labels, 3)])) for c in calls)


def cpu_flags() -> set[str]:
    """The CPU's feature flags as the kernel reports them (Linux), independent of PyTorch."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        pytest.skip("no /proc/cpuinfo to read the CPU's flags from")
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), None)
    if line is None:
        pytest.skip("/proc/cpuinfo lists no flags (not x86)")
    return set(line.split(":", 1)[1].split())


def test_auto_precision_is_bf16_exactly_where_the_cpu_has_bf16_instructions():
    """Checked against the kernel's CPU flags, not against the probe the code uses."""
    cpu = torch.device("cpu")
    native = bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    assert has_fast_bf16(cpu) == native
    assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
    for precision in ("fp32", "bf16", "fp16"):
        assert resolve_precision(precision, cpu) == precision


@pytest.mark.parametrize("decay", [0.0, 0.9, 0.999])
def test_ema_updates_follow_the_formula(decay):
    """ema_n = decay * ema_{n-1} + (1 - decay) * model, written out in float64 per tensor, for
    the fused list form the training step uses and for update_ema."""
    model, fused, plain = random_net(0), random_net(1), random_net(1)
    expected = {k: v.double() for k, v in fused.state_dict().items() if v.is_floating_point()}
    pairs = ema_tensor_lists(fused, model)
    for _ in range(3):
        with torch.no_grad():  # the model moves between updates, as in training
            for p in model.parameters():
                p.add_(0.1)
        current = model.state_dict()
        expected = {k: decay * v + (1 - decay) * current[k].double() for k, v in expected.items()}
        lerp_ema(pairs, decay)
        update_ema(plain, model, decay)
    for ema in (fused, plain):
        state = ema.state_dict()
        for name, value in expected.items():
            torch.testing.assert_close(state[name].double(), value, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_sampler_callbacks_receive_copies_of_x_t_and_x_T_is_untouched(name):
    """A callback that keeps x_t must see each step's value (no sampler may update it in place),
    and the caller's x_T must come back unchanged."""
    schedule, kept = build_schedule(CONFIG), []
    x_T = torch.randn(2, 3, 8, 8)
    original = x_T.clone()
    denoiser = make_denoiser(random_net(), schedule, prediction="eps", precision="fp32")
    timesteps = sampling_timesteps(schedule, 4, "uniform")
    with torch.inference_mode():
        SAMPLERS[name](
            denoiser, x_T, schedule, timesteps, generator=torch.Generator().manual_seed(0),
            callback=lambda info: kept.append(info.x_t),
        )  # fmt: skip
    assert torch.equal(x_T, original)
    assert torch.allclose(kept[0], x_T, atol=1e-5)
    assert len(kept) == 4 and all(not torch.equal(a, b) for a, b in zip(kept, kept[1:]))


@pytest.mark.slow
def test_generate_samples_at_the_asked_precision():
    """generate()'s precision argument, else the config's sample.precision, reaches the network."""
    from dataclasses import replace

    from ddpm.errors import DDPMError
    from ddpm.generate import generate, sample_config
    from ddpm.loaded_run import LoadedRun

    net, schedule = random_net(), build_schedule(CONFIG)
    kwargs = dict(n=4, labels=torch.tensor([0, 1, 2, 0]), progress=False)

    def at(config, **changes):
        return LoadedRun(net, schedule, config, 0), sample_config(config, **changes)

    fp32 = generate(*at(CONFIG, sampler="ddim", steps=5, precision="fp32"), **kwargs)
    bf16 = generate(*at(CONFIG, sampler="ddim", steps=5, precision="bf16"), **kwargs)
    pinned = replace(CONFIG, sample=replace(CONFIG.sample, precision="fp32"))
    assert torch.equal(generate(*at(pinned, sampler="ddim", steps=5), **kwargs), fp32)
    assert not torch.equal(bf16, fp32)
    assert (bf16 - fp32).abs().mean() < 0.005
    with pytest.raises(DDPMError, match="^sample.precision must be one of"):  # at config time
        at(CONFIG, sampler="ddim", steps=5, precision="fp64")


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_float64_and_channels_last_noise_give_the_float32_contiguous_samples(name):
    """A float64 x_T runs (the network still gets float32; deterministic samplers give the float32
    samples, stochastic ones draw float64 noise) and a channels_last x_T gives the samples of the
    contiguous one: stochastic samplers draw their noise in the same order whatever the layout."""
    schedule = build_schedule(CONFIG)
    denoiser = make_denoiser(random_net(), schedule, prediction="eps", precision="fp32")
    timesteps = sampling_timesteps(schedule, 4, "uniform")
    x_T = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2))

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            generator = torch.Generator().manual_seed(0)
            return SAMPLERS[name](denoiser, x, schedule, timesteps, generator=generator).float()

    reference = run(x_T)
    in_float64 = run(x_T.double())
    assert in_float64.isfinite().all()
    if name in DETERMINISTIC_SAMPLERS:
        assert torch.allclose(in_float64, reference, atol=1e-4)
    assert torch.allclose(
        run(x_T.contiguous(memory_format=torch.channels_last)), reference, atol=1e-5
    )
