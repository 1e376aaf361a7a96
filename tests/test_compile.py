"""torch.compile paths: a new batch size or timestep never recompiles, and a failing compiler
falls back to eager (forward or backward) with one warning, giving the eager result."""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.backends.common import aot_autograd
from torch._inductor.exc import CppCompileError

from ddpm.builders import build_model
from ddpm.compiling import CompiledNetwork
from ddpm.config import from_dict
from ddpm.train.step import make_trainer

CONFIG = from_dict(
    {
        "model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                  "attention_resolutions": [4], "num_groups": 4, "dropout": 0.0},
        "data": {"image_size": 8, "channels": 1},
        "train": {"precision": "fp32", "warmup_steps": 1, "ema_decay": 0.5},
    }
)  # fmt: skip


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def failing_backend(gm, example_inputs):
    """What the inductor raises on a machine without a working C++ compiler."""
    raise CppCompileError(["g++", "kernel.cpp"], "g++: command not found")


@pytest.mark.slow
def test_smaller_batches_and_new_timesteps_do_not_recompile():
    """Shapes are static; a smaller batch is padded to the largest so far (the same results), and
    only a larger batch than any before compiles again."""
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    net = build_model(CONFIG).eval()
    compiled = CompiledNetwork(net, backend=counting_backend)
    with torch.no_grad():
        for batch, t, expected_graphs in ((4, 999, 1), (3, 10, 1), (1, 500, 1), (2, 0, 1),
                                          (6, 3, 2), (5, 7, 2), (1, 1, 2)):  # fmt: skip
            x = torch.randn(batch, 1, 8, 8)
            timesteps = torch.full((batch,), t)
            out = compiled(x, timesteps)
            assert out.shape == (batch, 1, 8, 8)
            assert torch.allclose(out, net(x, timesteps), atol=1e-5)
            assert len(graphs) == expected_graphs, f"batch {batch}"
    assert not compiled.failed


def test_a_failing_compiler_falls_back_to_eager_with_one_warning(capsys):
    net = build_model(CONFIG).eval()
    compiled = CompiledNetwork(net, backend=failing_backend)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([1, 2, 3])
    with torch.no_grad():
        assert torch.equal(compiled(x, t), net(x, t))
        assert torch.equal(compiled(x, t), net(x, t))
    err = capsys.readouterr().err.strip().splitlines()
    assert compiled.failed and len(err) == 1
    assert err[0].startswith("warning: torch.compile failed, running eagerly")


def eager_fw_failing_bw_backend():
    def compiled_as_is(gm, example_inputs):
        return gm.forward

    return aot_autograd(fw_compiler=compiled_as_is, bw_compiler=failing_backend)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["forward", "backward"])
def test_training_step_falls_back_when_compilation_fails(backend, capsys):
    """A compile error in the forward or (compiled lazily) the backward pass: the step reruns
    eagerly and the weights equal those of an eager trainer's, step for step."""
    compile_config = from_dict({"train": {"compile": True}}, base=CONFIG)
    torch.manual_seed(0)
    eager = make_trainer(CONFIG, torch.device("cpu"))
    torch.manual_seed(0)
    failing = failing_backend if backend == "forward" else eager_fw_failing_bw_backend()
    compiled = make_trainer(compile_config, torch.device("cpu"), compile_backend=failing)
    x0 = torch.rand(4, 1, 8, 8).mul(2).sub(1)
    for n in range(3):
        a, b = eager.step(n, x0, None), compiled.step(n, x0, None)
        assert torch.equal(a[0], b[0]) and bool(b[2])
    for p, q in zip(eager.model.parameters(), compiled.model.parameters()):
        assert torch.equal(p, q)
    assert capsys.readouterr().err.count("torch.compile failed") == 1


@pytest.mark.slow
def test_compiled_sampling_matches_eager_without_recompiling(capsys):
    """generate(compile=True) through the real inductor: the same images as eager (float32
    rounding apart), over batches of 3, 3 and 1 and a second call, with no recompilation."""
    from ddpm.builders import build_schedule
    from ddpm.generate import generate, sample_config
    from ddpm.loaded_run import LoadedRun

    torch.manual_seed(0)
    net = build_model(CONFIG).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    schedule = build_schedule(CONFIG)
    # fp32: "auto" is bf16 on a CPU with AVX512-BF16, where compiled and eager round differently
    run = LoadedRun(net, schedule, CONFIG, step=0)
    settings = dict(sampler="ddim", steps=4, batch_size=3, precision="fp32")
    eager_sample = sample_config(CONFIG, **settings, compile=False)
    compiled_sample = sample_config(CONFIG, **settings, compile=True)
    eager = generate(run, eager_sample, n=7, seed=3, progress=False)
    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled = generate(run, compiled_sample, n=7, seed=3, progress=False)
        again = generate(run, compiled_sample, n=4, seed=3, progress=False)  # 3 and 1
    assert "torch.compile failed" not in capsys.readouterr().err
    assert torch.allclose(compiled, eager, atol=1e-4)
    assert torch.allclose(again, eager[:4], atol=1e-4)


@pytest.mark.slow
def test_a_broadcast_timestep_is_not_padded():
    """t [1] broadcasts over the batch as in the eager network; only batch-sized tensors pad."""
    net = build_model(CONFIG).eval()
    compiled = CompiledNetwork(net, backend="eager")
    with torch.no_grad():
        compiled(torch.randn(4, 1, 8, 8), torch.full((4,), 3))  # compiled for 4 rows
        x = torch.randn(3, 1, 8, 8)
        for t in (torch.tensor([500]), torch.full((3,), 500)):
            assert torch.allclose(compiled(x, t), net(x, t), atol=1e-5)
