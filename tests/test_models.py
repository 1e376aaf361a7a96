import math

import pytest
import torch

from ddpm.builders import build_model
from ddpm.config import UNetConfig, load_preset
from ddpm.errors import DDPMError
from ddpm.models import UNet
from ddpm.models.layers import timestep_embedding

# (image size, channel_mult, attention_resolutions): every size the presets and docs mention.
SIZES = [
    (8, (1, 2), (4,)),
    (28, (1, 2, 4), (7,)),
    (32, (1, 2, 2, 2), (16,)),
    (64, (1, 2, 2, 2), (16,)),
    (256, (1, 1, 2, 2, 4, 4), (16,)),
]


def small_config(**overrides):
    options = dict(base_channels=8, channel_mult=(1, 2), num_res_blocks=1,
                   attention_resolutions=(4,), num_groups=4, dropout=0.0)  # fmt: skip
    options.update(overrides)
    return UNetConfig(**options)


def perturb(net, seed=0, scale=0.02):
    """conv_out and the residual branches start at zero; nudge every weight off zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return net


@pytest.mark.slow
@pytest.mark.parametrize("linear_attention", [False, True])
@pytest.mark.parametrize("block", ["resnet", "convnext"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size,mult,attention", SIZES, ids=[str(s[0]) for s in SIZES])
def test_unet_output_shape(generator, size, mult, attention, channels, block, linear_attention):
    config = small_config(channel_mult=mult, attention_resolutions=attention, block=block,
                          linear_attention=linear_attention)  # fmt: skip
    net = UNet(config, image_size=size, in_channels=channels).eval()
    x = torch.randn(2, channels, size, size, generator=generator)
    with torch.no_grad():
        out = net(x, torch.tensor([0, 999]))
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    assert torch.isfinite(out).all()


def test_output_is_zero_at_init_and_depends_on_inputs_after_perturbation(generator):
    net = UNet(small_config(), image_size=8, in_channels=1).eval()
    x = torch.randn(2, 1, 8, 8, generator=generator)
    t = torch.tensor([3, 3])
    with torch.no_grad():
        assert torch.equal(net(x, t), torch.zeros_like(x))  # zero-initialised conv_out
        perturb(net)
        out = net(x, t)
        assert not torch.allclose(out[0], out[1])  # different images
        assert not torch.allclose(net(x, torch.tensor([900, 900])), out)  # different t


def test_class_conditional(generator):
    net = perturb(UNet(small_config(num_classes=10), image_size=8, in_channels=1).eval())
    assert net.null_label == 10
    x = torch.randn(3, 1, 8, 8, generator=generator)
    t = torch.tensor([5, 500, 995])
    with torch.no_grad():
        with_labels = net(x, t, torch.tensor([0, 4, 9]))
        other_labels = net(x, t, torch.tensor([1, 5, 8]))
        unconditional = net(x, t, None)
        null = net(x, t, torch.full((3,), 10))
    assert with_labels.shape == unconditional.shape == x.shape
    assert not torch.allclose(with_labels, other_labels)
    assert torch.equal(unconditional, null)  # labels=None means the null class
    assert net.label_emb.num_embeddings == 11


@pytest.mark.parametrize("block", ["resnet", "convnext"])
def test_every_parameter_gets_a_gradient(generator, block):
    config = small_config(channel_mult=(1, 2, 2), attention_resolutions=(4,),
                          linear_attention=True, block=block, num_classes=3)  # fmt: skip
    net = perturb(UNet(config, image_size=16, in_channels=2).train())
    x = torch.randn(3, 2, 16, 16, generator=generator)
    net(x, torch.tensor([1, 400, 999]), torch.tensor([0, 1, 3])).sum().backward()
    names = [name for name, _ in net.named_parameters()]
    assert any("attention" in type(m).__name__.lower() for m in net.modules())
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().max() > 0, name
    assert len(names) > 50


@pytest.mark.parametrize(
    "size,overrides,message",
    [
        (30, dict(channel_mult=(1, 2, 2), attention_resolutions=()), "cannot be halved"),
        (4, dict(channel_mult=(1, 2, 2, 2), attention_resolutions=()), "cannot be halved"),
        (8, dict(attention_resolutions=(3,)), "not resolutions"),
        (8, dict(attention_resolutions=(16,)), "not resolutions"),
        (8, dict(base_channels=6, num_groups=4), "divisible"),
        (8, dict(base_channels=8, channel_mult=(1, 3), num_groups=16), "divisible"),
        (8, dict(channel_mult=()), "positive"),
        (8, dict(channel_mult=(1, 0)), r"model.channel_mult\[1\] must be an integer >= 1"),
        (8, dict(num_res_blocks=0), ">= 1"),
    ],
)
def test_invalid_configs_raise(size, overrides, message):
    with pytest.raises(DDPMError, match=message):
        UNet(small_config(**overrides), image_size=size, in_channels=1)


def test_zero_channels_raise():
    with pytest.raises(DDPMError):
        UNet(small_config(), image_size=8, in_channels=0)


def test_digits_preset_parameter_count():
    net = build_model(load_preset("digits"))
    # Golden value: changes only if the architecture (or the digits preset) changes.
    assert sum(p.numel() for p in net.parameters()) == 755_009


def test_timestep_embedding_values():
    t = torch.tensor([0, 1, 10, 999])
    dim = 16
    emb = timestep_embedding(t, dim)
    assert emb.shape == (4, dim)
    assert emb.dtype == torch.float32
    half = dim // 2
    for i, step in enumerate(t.tolist()):
        for k in range(half):
            w = 10_000.0 ** (-k / half)
            assert emb[i, k].item() == pytest.approx(math.cos(step * w), abs=1e-4)
            assert emb[i, half + k].item() == pytest.approx(math.sin(step * w), abs=1e-4)


def test_timestep_embedding_distinguishes_steps():
    emb = timestep_embedding(torch.arange(1000), 32)
    assert emb.shape == (1000, 32)
    distances = torch.cdist(emb, emb)
    distances.fill_diagonal_(float("inf"))
    assert distances.min() > 1e-3  # every pair of timesteps gets a different embedding


def test_timestep_embedding_odd_dim():
    emb = timestep_embedding(torch.tensor([0, 5]), 7)
    assert emb.shape == (2, 7)
    assert torch.equal(emb[:, -1], torch.zeros(2))  # the odd dimension is zero padding
