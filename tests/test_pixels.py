"""ddpm.pixels: the one uint8 <-> [-1, 1] conversion."""

from __future__ import annotations

import torch

from ddpm.pixels import from_uint8, to_uint8


def test_every_uint8_value_maps_to_its_grid_point_and_back():
    u = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    x = from_uint8(u)
    assert x.dtype == torch.float32 and x.shape == u.shape
    expected = torch.linspace(-1, 1, 256, dtype=torch.float64).reshape(1, 1, 16, 16)
    assert torch.allclose(x.double(), expected, atol=1e-6)
    assert torch.equal(to_uint8(x), u)
    assert torch.equal(to_uint8(from_uint8(u, torch.float64)), u)


def test_to_uint8_clamps_and_rounds_to_nearest():
    x = torch.tensor([-3.0, -1.0, 1.0 / 255 - 1, 0.0, 0.999, 1.0, 7.0])
    # (x + 1) * 127.5: -255 -> 0, 0, 0.5 (half to even: 0), 127.5 (128), 254.87 (255), 255, 255
    assert to_uint8(x).tolist() == [0, 0, 0, 128, 255, 255, 255]


def test_from_uint8_leaves_its_input_alone_and_takes_floats_on_the_same_scale():
    pixels = torch.tensor([0.0, 127.5, 255.0])
    before = pixels.clone()
    assert from_uint8(pixels, torch.float64).tolist() == [-1.0, 0.0, 1.0]
    assert torch.equal(pixels, before)  # scaled in place, but in its own copy


def test_from_uint8_matches_the_division_it_replaces_bit_for_bit():
    u = torch.randint(
        0, 256, (64, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(from_uint8(u), u.float() / 127.5 - 1)
    assert torch.equal(from_uint8(u, torch.float64), u.double() / 127.5 - 1)
