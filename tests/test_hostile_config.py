"""Hostile configs and arguments (issue 15): YAML alias bombs, configs that cannot fit in memory,
silently wrong values. Each is one `ddpm: error:` line and exit code 2, at config time: fast, with
no run folder created, no sampling started and no file overwritten."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import time
import typing
from pathlib import Path

import pytest
import torch
from tiny import sets

import ddpm.resources as resources
from ddpm.builders import build_model
from ddpm.cli import main
from ddpm.config import (
    SECTIONS,
    RunConfig,
    UNetConfig,
    from_dict,
)
from ddpm.config_yaml import load_yaml, parse_overrides
from ddpm.errors import DDPMError

SRC = Path(__file__).resolve().parents[1] / "src"
FAST = 30.0  # seconds: a Python start with torch on a loaded machine, far below the old minutes


def ddpm(*args: str, cwd: Path) -> tuple[int, str, str, float]:
    """Run `python -m ddpm ARGS` -> (exit code, stdout, stderr, seconds)."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "ddpm", *args], cwd=cwd, env=env, capture_output=True,
        text=True, timeout=300,
    )  # fmt: skip
    return result.returncode, result.stdout, result.stderr, time.perf_counter() - started


def refused(*args: str, cwd: Path, expect: str) -> str:
    """Assert the CLI refuses ARGS with one line containing `expect`, fast, no traceback."""
    code, _, err, seconds = ddpm(*args, cwd=cwd)
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("ddpm: error:") and expect in err, err
    assert seconds < FAST, seconds
    return err.strip()


def billion_laughs() -> str:
    """The classic: 9 levels of 9 aliases each, 9**9 = 387M strings once expanded."""
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    return "\n".join([*lines, "train: {lr: *i}", ""])


# Item 1. Guards: a 475-byte alias bomb ran 99 s to a MemoryError traceback.
@pytest.mark.slow
def test_an_alias_bomb_config_is_refused_at_once(tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs())
    assert bomb.stat().st_size < 600
    err = refused(
        "train", "--dataset", "digits", "--out", "run", "--config", str(bomb),
        cwd=tmp_path, expect="anchors and aliases",
    )  # fmt: skip
    assert "line 1" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "text, expect",
    [
        ("train: &x {lr: 0.1}\n", "anchors and aliases"),  # an anchor alone
        ("train: {lr: *x}\n", "anchors and aliases"),  # an alias alone
        ("[" * 5000 + "]" * 5000, "nested too deeply"),
        (f"train: {{seed: {'9' * 5000}}}\n", "cannot be read"),  # over int()'s 4300 digits
        ("train: [unclosed\n", "not valid YAML"),
    ],
)
def test_hostile_yaml_is_one_error(tmp_path, text, expect):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(DDPMError, match=expect) as error:
        load_yaml(path)
    assert len(str(error.value)) < 300 and "\n" not in str(error.value)


def test_a_binary_or_huge_config_file_is_refused_before_parsing(tmp_path):
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"train:\n  lr: \xff\xfe\n")
    with pytest.raises(DDPMError, match="not UTF-8"):
        load_yaml(binary)
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"# padding\n" * 100_001)  # 1,000,010 bytes of comments
    started = time.perf_counter()
    with pytest.raises(DDPMError, match="over 1 MB"):
        load_yaml(huge)
    assert time.perf_counter() - started < 1.0


def test_set_values_refuse_aliases_too():
    with pytest.raises(DDPMError, match="anchors and aliases"):
        parse_overrides(["train.lr=[&a [1, 2], *a]"])
    assert parse_overrides(["data.data_dir=a:b"]) == {"data": {"data_dir": "a:b"}}  # kept as text


def test_a_huge_value_is_never_printed_in_full():
    """The bomb built in Python (shared references, cheap to make) reaches the type check: the
    message shows a few elements, never the 387M-element repr that took 99 s."""
    value: list = ["lol"] * 9
    for _ in range(8):
        value = [value] * 9
    started = time.perf_counter()
    with pytest.raises(DDPMError, match="train.lr must be of type float") as error:
        from_dict({"train": {"lr": value}})
    assert time.perf_counter() - started < 1.0
    assert len(str(error.value)) < 200
    with pytest.raises(DDPMError) as error:
        from_dict({"train": {f"key{i}": 1 for i in range(100_000)}})
    assert "unknown config key" in str(error.value) and len(str(error.value)) < 1000
    with pytest.raises(DDPMError, match="about 5000 digits") as error:
        from_dict({"train": {"seed": 10**4999}})


# Item 2. Guards: configs that cannot fit ended in allocator tracebacks after minutes.
@pytest.mark.parametrize(
    "pairs, expect",
    [
        (["data.image_size=2048", "model.attention_resolutions=[]"], "this config needs about"),
        (["model.base_channels=100000"], "this config needs about"),
        (["diffusion.num_timesteps=1000000000"], "diffusion.num_timesteps must be an integer in"),
    ],
)
@pytest.mark.slow
def test_a_config_that_cannot_fit_is_refused_before_building(tmp_path, pairs, expect):
    err = refused(
        "train", "--dataset", "digits", "--out", "run", *sets(pairs), cwd=tmp_path, expect=expect
    )
    if "needs about" in err:
        assert "RAM" in err or "memory limit" in err or "cuda" in err  # the machine's memory
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_dry_run_prints_the_estimate(tmp_path):
    code, out, err, _ = ddpm(
        "train", "--dataset", "digits", "--out", "run", "--dry-run", cwd=tmp_path
    )
    assert code == 0, err
    last = out.strip().splitlines()[-1]
    assert last.startswith("# estimated training memory:") and "parameters" in last
    assert not (tmp_path / "run").exists()


def tiny_config() -> RunConfig:
    return from_dict(
        {
            "model": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                      "attention_resolutions": [4], "num_groups": 4},
            "data": {"image_size": 8},
            "train": {"batch_size": 10},
        }
    )  # fmt: skip


def test_the_estimate_counts_parameters_exactly_and_every_part():
    config = tiny_config()
    estimate = resources.estimate_training_memory(config)
    real = sum(p.numel() for p in build_model(config).parameters())
    assert estimate.parameters == real
    assert estimate.parameter_bytes == 5 * 4 * real  # weights, grads, 2 AdamW moments, EMA
    # levels 8x8 (8 channels) and 4x4 (16, with attention): 3 blocks each, attention doubles the
    # second; the middle: 3 layers at 4x4 x 16 channels
    elements = 8 * 64 * 3 + 16 * 16 * 3 * 2 + 3 * 16 * 16
    assert resources.activation_elements(config.model, 8) == elements
    factor = resources.ACTIVATION_FACTOR
    assert estimate.activation_bytes == factor * 4 * 10 * elements
    assert estimate.schedule_bytes == 8 * resources.SCHEDULE_TABLES * 1000
    assert estimate.total == sum(
        (estimate.parameter_bytes, estimate.activation_bytes, estimate.schedule_bytes)
    )


def test_the_refusal_names_the_estimate_and_the_memory(monkeypatch):
    config = tiny_config()
    small = resources.DeviceMemory(1000, "1000 bytes of RAM")
    monkeypatch.setattr(resources, "device_memory", lambda device: small)
    with pytest.raises(DDPMError, match="needs about .* more than the 1000 bytes of RAM"):
        resources.check_training_fits(config, torch.device("cpu"))


def test_the_machine_memory_is_the_ram_or_a_lower_container_limit(monkeypatch):
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    monkeypatch.setattr(resources, "_cgroup_limit", lambda: None)
    assert resources.device_memory(torch.device("cpu")).total == ram
    monkeypatch.setattr(resources, "_cgroup_limit", lambda: 2**30)
    limited = resources.device_memory(torch.device("cpu"))
    assert limited.total == min(ram, 2**30) and "GB" in limited.description


@pytest.mark.slow
def test_every_preset_fits_the_meta_device_estimate():
    """Counting on the meta device works for every architecture the presets use."""
    from ddpm.config import load_preset, preset_names

    for name in preset_names():
        config = load_preset(name)
        assert resources.count_parameters(config) == sum(
            p.numel() for p in build_model(config).parameters()
        )


# Item 3. Guards: silently wrong values passed --dry-run or were used as something else.
def numeric_fields() -> list[tuple[str, str, type]]:
    """(section, key, int or float) for every numeric config field, tuples' items included."""
    found = []
    for section, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = hints[f.name]
            base = typing.get_args(hint)[0] if typing.get_origin(hint) is tuple else hint
            if base in (int, float):
                found.append((section, f.name, base))
    return found


@pytest.mark.parametrize("section, key, kind", numeric_fields())
def test_every_numeric_field_refuses_non_finite_and_out_of_int64_values(section, key, kind):
    values = [math.nan, math.inf, -math.inf] if kind is float else [2**63, -(2**63) - 1]
    for value in values:
        with pytest.raises(DDPMError, match=rf"^{section}\.{key}(\[0\])? must be") as error:
            from_dict({section: {key: [value] if key in TUPLE_KEYS else value}})
        assert "\n" not in str(error.value)


TUPLE_KEYS = {"channel_mult", "attention_resolutions"}


@pytest.mark.parametrize(
    "values, expect",
    [
        ({"train": {"weight_decay": -0.1}}, "train.weight_decay must be a finite number >= 0"),
        ({"train": {"seed": 2**64 + 1}}, "train.seed must be an integer in [0, 2**63)"),
        ({"train": {"seed": -1}}, "train.seed must be an integer in [0, 2**63)"),
        ({"sample": {"sampler": "bogus"}}, "sample.sampler must be one of"),
        ({"sample": {"steps": 5000}}, "sample.steps must be at most diffusion.num_timesteps"),
        ({"sample": {"steps": 0}}, "sample.steps must be an integer >= 1"),
        ({"sample": {"batch_size": -1}}, "sample.batch_size must be an integer >= 1"),
        ({"train": {"eval_every": "100", "eval_steps": 2000}}, "train.eval_steps must be at most"),
        ({"diffusion": {"num_timesteps": 100_001}}, "diffusion.num_timesteps must be an integer"),
        ({"diffusion": {"cosine_s": -1.0}}, "diffusion.cosine_s must be a finite number >= 0"),
        ({"model": {"num_classes": -2}}, "model.num_classes must be an integer >= 0"),
        ({"model": {"channel_mult": [1, 0]}}, "model.channel_mult[1] must be an integer >= 1"),
        ({"train": {"keep_checkpoints": -1}}, "train.keep_checkpoints must be an integer >= 0"),
        ({"train": {"eval_every": "9" * 5000}}, "train.eval_every must be 1 to 2**63 - 1 steps"),
    ],
)
def test_out_of_range_values_are_refused_at_config_time(values, expect):
    with pytest.raises(DDPMError) as error:
        from_dict(values)
    assert str(error.value).startswith(expect), error.value


def test_a_short_chain_keeps_its_eval_steps_default_while_quality_is_off():
    config = from_dict({"diffusion": {"num_timesteps": 10}, "sample": {"steps": 10}})
    assert config.train.eval_steps == 20 and not config.train.eval_every


def test_sections_built_in_code_are_checked_too():
    with pytest.raises(DDPMError, match="model.dropout must be a finite number in"):
        UNetConfig(dropout=math.nan)


@pytest.mark.parametrize(
    "pair, expect",
    [
        ("train.weight_decay=.nan", "train.weight_decay must be a finite number >= 0, got nan"),
        ("train.seed=12345678901234567890", "train.seed must be an integer in [0, 2**63)"),
        ("sample.sampler=bogus", "sample.sampler must be one of"),
        ("sample.steps=5000", "sample.steps must be at most diffusion.num_timesteps (1000)"),
    ],
)
def test_train_refuses_wrong_values_in_dry_run(tmp_path, capsys, pair, expect):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--out", str(out), "--set", pair,
                 "--dry-run"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and expect in err, err
    assert not out.exists()


@pytest.mark.slow
def test_a_nan_weight_decay_is_one_line_from_the_command_line(tmp_path):
    """Guards: train.weight_decay=nan trained into a traceback (and a 20-digit seed too)."""
    refused("train", "--dataset", "digits", "--out", "run", "--set", "train.weight_decay=.nan",
            "--set", "train.seed=12345678901234567890", cwd=tmp_path,
            expect="train.weight_decay must be a finite number >= 0, got nan")  # fmt: skip
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "args, expect",
    [
        (["--steps", "0"], "argument --steps: must be an integer >= 1, got 0"),
        (["--batch-size", "0"], "argument --batch-size: must be an integer >= 1, got 0"),
        (["--batch-size", "-1"], "argument --batch-size: must be an integer >= 1, got -1"),
        (["--n", "0"], "argument --n: must be an integer >= 1, got 0"),
        (["--seed", str(2**64)], "argument --seed: must be an integer in [0, 2**63)"),
        (["--guidance", "nan", "--class", "1"], "argument --guidance: must be a finite number"),
    ],
)
def test_sample_refuses_bad_numbers_before_sampling(tiny_run, tmp_path, capsys, args, expect):
    grid = tmp_path / "grid.png"
    grid.write_bytes(b"earlier")
    with pytest.raises(SystemExit) as exit_info:  # argparse's one line, before the run is loaded
        main(["sample", "--run", str(tiny_run), "--out", str(grid), "--quiet", *args])
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and expect in err, err
    assert "sampler:" not in out and grid.read_bytes() == b"earlier"  # not clobbered


@pytest.mark.slow
def test_sample_steps_0_is_one_line_from_the_command_line(tiny_run, tmp_path):
    """Guards: `ddpm sample --steps 0` ran 50 steps and printed "0 steps, 0 NFE"."""
    refused("sample", "--run", str(tiny_run), "--steps", "0", cwd=tmp_path,
            expect="argument --steps: must be an integer >= 1, got 0")  # fmt: skip
    assert list(tmp_path.iterdir()) == []  # no grid


@pytest.mark.parametrize(
    "command",
    [
        ["eval", "--n", "0"],
        ["eval", "--bpd-timesteps", "-1"],
        ["sweep", "--n", "-5"],
        ["interpolate", "--seeds", "1", "-2"],
        ["featnet", "train", "--dataset", "digits", "--epochs", "0"],
        ["bench", "--batch", "0"],
    ],
)
def test_other_commands_refuse_bad_numbers_in_argparse(tiny_run, command, capsys):
    args = [*command] if command[0] in ("featnet", "bench") else [*command, "--run", str(tiny_run)]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "must be an integer" in err, err


@pytest.mark.parametrize(
    "command",
    [
        ["sample", "--n", str(10**15)],
        ["interpolate", "--seeds", "1", "2", "--frames", str(10**15)],
        ["sweep", "--n", str(10**15)],
        ["eval", "--metrics", "fid", "--n", str(10**15)],
    ],
)
def test_more_images_than_memory_holds_is_one_line_before_sampling(
    tiny_run, tmp_path, capsys, command
):
    out = ["--out", str(tmp_path / ("x.png" if command[0] in ("sample", "interpolate") else "x"))]
    started = time.perf_counter()
    assert main([*command, "--run", str(tiny_run), "--quiet", *out]) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and "images of 1x8x8 need about" in err, err
    assert "sampler:" not in out and time.perf_counter() - started < FAST
    assert list(tmp_path.iterdir()) == []


def test_sweep_refuses_a_zero_step_count(tiny_run, capsys):
    assert main(["sweep", "--run", str(tiny_run), "--steps", "2,0", "--n", "4"]) == 2
    assert "--steps expects a comma-separated list of integers >= 1" in capsys.readouterr().err


def test_generate_refuses_zero_steps_instead_of_using_the_default(tiny_run):
    from ddpm.generate import generate, sample_config
    from ddpm.loaded_run import load_run

    run = load_run(tiny_run)
    with pytest.raises(DDPMError, match=r"sample\.steps must be an integer >= 1, got 0"):
        generate(run, sample_config(run.config, steps=0), n=2, progress=False)
    with pytest.raises(DDPMError, match=r"sample\.batch_size must be an integer >= 1, got 0"):
        generate(run, sample_config(run.config, batch_size=0), n=2, progress=False)
    with pytest.raises(DDPMError, match="n must be >= 1, got 0"):
        generate(run, n=0, progress=False)
