import pytest
import torch


@pytest.fixture
def generator():
    """A fresh CPU generator with a fixed seed, for reproducible random tensors in a test."""
    return torch.Generator().manual_seed(0)
