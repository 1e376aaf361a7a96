"""benchmarks/hostile_inputs.py's fast cases (issue 15), through the script's own runner: each
hostile input gets the expected exit code and one `ddpm: ` line (or its warning), no traceback,
little memory, and loses no file. The cases that need a trained run or big files run only in the
script itself (`python benchmarks/hostile_inputs.py`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


hostile = _load("hostile_inputs")
FAST = [case for case in hostile.CASES if case.fast]
MEMORY_LIMIT = 3 << 30  # as the script's default: a runaway case fails instead of swapping


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    return hostile.prepare_shared(root, need_run=False, timeout=60, memory_limit=MEMORY_LIMIT)


def test_the_fast_subset_is_the_quick_self_contained_part():
    names = {case.name for case in FAST}
    assert {"idx-dims-overflow", "yaml-alias-bomb", "cifar-200k-images"} <= names
    assert not any(case.needs_run for case in FAST)
    assert len({case.name for case in hostile.CASES}) == len(hostile.CASES)


@pytest.mark.slow
@pytest.mark.parametrize("case", FAST, ids=[case.name for case in FAST])
def test_fast_hostile_input_is_clean(case, shared):
    row = hostile.run_one(case, shared.parent, shared, timeout=60, memory_limit=MEMORY_LIMIT)
    table = hostile.format_table([row])
    assert row.clean, f"{table}\n{'; '.join(row.problems)}"


runner = sys.modules["hostile_runner"]


def _row(case, outcome, **changes) -> list[str]:
    row = runner.Row(case.name, outcome.exit, 1.0, 100.0, **changes)
    return runner.judge(case, outcome, row, cache_prefix="cache/")


def test_the_judge_wants_one_line_for_a_refusal(tmp_path):
    case = runner.Case("c", [], "refuse")
    one = runner.Outcome(tmp_path, 2, "", "ddpm: error: no such file\n")
    assert _row(case, one) == []
    traceback = runner.Outcome(tmp_path, 1, "", "Traceback (most recent call last):\nValueError\n")
    assert {"exit 1, expected 2", "traceback"} <= set(_row(case, traceback))
    assert any("refused but created out/x" in p for p in _row(case, one, created=["out/x"]))
    assert _row(case, one, created=["cache/ddpm/x"]) == []
    oom = runner.Outcome(tmp_path, 2, "", "ddpm: error: x is damaged (MemoryError: ...)\n")
    assert _row(case, oom) == ["ran out of memory"]
    late = runner.Outcome(tmp_path, 2, "sampler: ddim, 3 steps\n", one.stderr)
    assert any("refused after working" in p for p in _row(case, late))
    row = runner.Row("c", 2, 1.0, 100.0, created=["out/.lock"])
    assert runner.judge(case, one, row, cache_prefix="cache/") == [] and row.notes
    assert any("existing files changed" in p for p in _row(case, one, deleted=["data.bin"]))


def test_the_judge_wants_the_warning_escaped(tmp_path):
    case = runner.Case("w", [], "warn", warning=r"\\x1b\[31mred")
    escaped = runner.Outcome(tmp_path, 0, "", "ddpm: skipping '\\x1b[31mred.png'\n")
    raw = runner.Outcome(tmp_path, 0, "", "ddpm: skipping \x1b[31mred.png\n")
    assert _row(case, escaped) == []
    assert "raw control characters on stderr" in _row(case, raw)
    assert runner.escape("a\x1b[31mb\n") == "a\\x1b[31mb\\n"


def test_snapshots_tell_appends_from_changes(tmp_path):
    for name, text in {
        "log.csv": "a\n",
        "model.bin": "old",
        "gone.txt": "x",
        "c.json": "{",
    }.items():
        (tmp_path / name).write_text(text)
    before = runner.snapshot(tmp_path)
    (tmp_path / "c.json").rename(tmp_path / "c.json.damaged")  # set aside, then rewritten
    (tmp_path / "c.json").write_text("[]")
    (tmp_path / "log.csv").write_text("a\nb\n")
    (tmp_path / "model.bin").write_text("new")
    (tmp_path / "gone.txt").unlink()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "new.png").write_text("p")
    changes = runner.compare(tmp_path, before, runner.snapshot(tmp_path))
    assert changes == {"created": ["c.json.damaged", "sub/new.png"], "modified": ["model.bin"],
                       "deleted": ["gone.txt"], "appended": ["log.csv"], "moved": ["c.json"]}  # fmt: skip


def test_the_runner_measures_a_child(tmp_path):
    """Exit code, peak RSS (a child that touches 200 MB) and the timeout, on plain Python."""
    logs = tmp_path / "child"
    code = "import sys, time; b = bytearray(200 << 20); time.sleep(0.5); sys.exit(3)"
    exit_code, _, peak = runner.run_python(["-c", code], cwd=tmp_path, env={}, logs=logs,
                                           timeout=60, memory_limit=0)  # fmt: skip
    assert exit_code == 3 and 200 < peak < 400
    exit_code, seconds, _ = runner.run_python(["-c", "import time; time.sleep(30)"], cwd=tmp_path,
                                              env={}, logs=logs, timeout=1, memory_limit=0)  # fmt: skip
    assert exit_code is None and seconds < 10
