"""Output paths that cannot be written (issue 15): a folder where a file is needed, a file where a
folder is needed, a name PIL cannot write, a read-only folder or mount. Each is one `ddpm: error:`
line and exit code 2 BEFORE any training or sampling (it used to come after the work, or as a
traceback), and no existing file is clobbered.

Root ignores permission bits, so the chmod 0o555 cases are skipped as root; a path whose parent is
a regular file and a real read-only tmpfs mount fail for root too."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny import TINY_RUN, sets

from ddpm.cli import main
from ddpm.errors import DDPMError
from ddpm.output_paths import check_output_file, check_output_folder

SRC = Path(__file__).resolve().parents[1] / "src"
FAST = 30.0  # seconds: a Python start with torch on a loaded machine; the work took minutes
as_root = os.geteuid() == 0


@pytest.fixture
def read_only_mount(tmp_path) -> Path:
    """An empty tmpfs mounted read-only (needs root; skipped where mounting is not allowed)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.fixture
def workdir(tmp_path) -> Path:
    """A folder holding a regular file `afile`, a folder `adir` and an earlier `notes.txt`."""
    (tmp_path / "afile").write_text("keep")
    (tmp_path / "adir").mkdir()
    (tmp_path / "notes.txt").write_text("earlier")
    return tmp_path


def ddpm(*args: str, cwd: Path, env: dict | None = None) -> tuple[int, str, str]:
    """Run `python -m ddpm ARGS`, asserting it took less than FAST -> (code, stdout, stderr)."""
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "ddpm", *args], cwd=cwd, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(SRC), **(env or {})}, timeout=300,
    )  # fmt: skip
    assert time.perf_counter() - started < FAST
    return result.returncode, result.stdout, result.stderr


def refused(*args: str, cwd: Path, expect: str, env: dict | None = None) -> str:
    code, out, err = ddpm(*args, cwd=cwd, env=env)
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("ddpm: error:") and expect in err, err
    assert "sampler:" not in out  # no sampling happened
    return err.strip()


def refused_in_process(capsys, args: list[str], expect: str) -> str:
    """As `refused`, through ddpm.cli.main in this process (no Python start: cheaper)."""
    capsys.readouterr()
    started = time.perf_counter()
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and err.startswith("ddpm: error:"), err
    assert expect in err and "sampler:" not in out, err
    assert time.perf_counter() - started < FAST
    return err.strip()


def snapshot(folder: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
        for p in folder.rglob("*")
    }


# Guards: each of these sampled for the whole job, then failed to save (or wrote nowhere useful).
@pytest.mark.parametrize(
    "args, expect",
    [
        (["--out", "adir"], "is a folder; give a file name such as adir/samples.png"),
        (["--out", "noext"], "needs an image extension that PIL can write"),
        (["--out", "notes.txt"], "needs an image extension that PIL can write"),
        (["--out", "x.xbm"], "(got .xbm)"),  # a format PIL knows but cannot write in grey
        (["--out", "afile/x.png"], "afile is a file, not a folder"),
        (["--out", "g.png", "--npz", "afile/s.npz"], "afile is a file, not a folder"),
        (["--out", "g.png", "--npz", "adir"], "is a folder"),
        (["--out", "g.png", "--progressive", "notes.txt"], "needs an image extension"),
        (["--out", "g.png", "--npz", "g.png"], "--out and --npz name the same file"),
    ],
)
def test_sample_checks_its_outputs_before_sampling(
    tiny_run, workdir, monkeypatch, capsys, args, expect
):
    monkeypatch.chdir(workdir)
    before = snapshot(workdir)
    refused_in_process(capsys, ["sample", "--run", str(tiny_run), "--n", "2", "--quiet", *args],
                       expect)  # fmt: skip
    assert snapshot(workdir) == before  # nothing written, nothing clobbered


@pytest.mark.slow
def test_sample_to_a_folder_is_one_line_from_the_command_line(tiny_run, workdir):
    before = snapshot(workdir)
    refused("sample", "--run", str(tiny_run), "--out", "adir", cwd=workdir, expect="is a folder")
    assert snapshot(workdir) == before


@pytest.mark.slow
def test_sample_to_a_read_only_mount_is_one_line(tiny_run, read_only_mount, tmp_path):
    err = refused("sample", "--run", str(tiny_run), "--out", str(read_only_mount / "g.png"),
                  cwd=tmp_path, expect="is not writable")  # fmt: skip
    assert "Read-only file system" in err


@pytest.mark.skipif(as_root, reason="root writes into a 0o555 folder")
def test_sample_into_a_read_only_folder_is_one_line(tiny_run, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        refused("sample", "--run", str(tiny_run), "--out", str(locked / "sub" / "g.png"),
                cwd=tmp_path, expect="permission denied")  # fmt: skip
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize(
    "out, expect",
    [
        ("afile", "the run folder afile is a file, not a folder"),
        ("afile/run", "afile is a file, not a folder"),
    ],
)
@pytest.mark.slow
def test_train_checks_its_run_folder_before_training(workdir, out, expect):
    before = snapshot(workdir)
    refused("train", "--dataset", "digits", "--out", out, *sets(TINY_RUN), cwd=workdir,
            expect=expect)  # fmt: skip
    assert snapshot(workdir) == before


@pytest.mark.slow
def test_train_on_a_read_only_mount_is_one_line_before_loading_data(read_only_mount, tmp_path):
    err = refused("train", "--dataset", "digits", "--out", str(read_only_mount / "run"),
                  "--dry-run", cwd=tmp_path, expect="is not writable")  # fmt: skip
    assert "Read-only file system" in err


@pytest.mark.skipif(as_root, reason="root writes into a 0o555 folder")
def test_train_into_a_read_only_folder_is_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    try:
        refused("train", "--dataset", "digits", "--out", str(locked / "run"), cwd=tmp_path,
                expect="permission denied")  # fmt: skip
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize(
    "command, expect",
    [
        (["interpolate", "--seeds", "1", "2", "--out", "adir"], "is a folder"),
        (["interpolate", "--seeds", "1", "2", "--out", "strip.txt"], "needs an image extension"),
        (["sweep", "--out", "afile"], "the sweep folder (--out) afile is a file"),
        (["eval", "--metrics", "val-loss", "--out", "afile"], "the eval folder (--out) afile is"),
        (["eval", "--metrics", "val-loss", "--out", "afile/eval"], "afile is a file, not a"),
    ],
)
def test_other_commands_check_their_outputs_first(
    tiny_run, workdir, monkeypatch, capsys, command, expect
):
    monkeypatch.chdir(workdir)
    before = snapshot(workdir)
    refused_in_process(capsys, [*command, "--run", str(tiny_run), "--quiet"], expect)
    assert snapshot(workdir) == before


@pytest.mark.slow
def test_featnet_checks_its_cache_folder_before_training(workdir):
    # the cache lives under $XDG_CACHE_HOME: here below a regular file, which fails even for root
    refused("featnet", "train", "--dataset", "digits", "--quiet", cwd=workdir,
            env={"XDG_CACHE_HOME": str(workdir / "afile" / "cache")},
            expect="afile is a file, not a folder")  # fmt: skip
    refused("featnet", "train", "--dataset", "digits", "--name", "../x", cwd=workdir,
            expect="--name must be a plain name")  # fmt: skip


@pytest.mark.parametrize(
    "command",
    [["eval", "--metrics", "fid", "--n", "2"], ["sweep", "--features", "digits", "--n", "2"]],
)
def test_an_unwritable_feature_cache_is_one_line_before_sampling(
    tiny_run, workdir, monkeypatch, capsys, command
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(workdir / "afile" / "cache"))
    out = ["--out", str(workdir / "results")]
    refused_in_process(capsys, [*command, "--run", str(tiny_run), "--quiet", *out],
                       "feature cache ($XDG_CACHE_HOME/ddpm)")  # fmt: skip
    assert not (workdir / "results").exists()


def test_the_checks_accept_new_nested_paths_and_create_nothing(tmp_path):
    target = tmp_path / "a" / "b" / "grid.png"
    assert check_output_file(target, "grid", image=True) == target
    assert check_output_folder(tmp_path / "c" / "run", "run folder") == tmp_path / "c" / "run"
    assert check_output_file(tmp_path / "x" / "samples.npz", "npz") == tmp_path / "x/samples.npz"
    assert list(tmp_path.iterdir()) == []  # no folder made, no probe file left


def test_an_existing_file_or_folder_is_accepted_where_it_belongs(tmp_path):
    (tmp_path / "grid.jpg").write_bytes(b"earlier")
    check_output_file(tmp_path / "grid.jpg", "grid", image=True)  # replaced later, atomically
    check_output_folder(tmp_path, "run folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.jpg"]
    with pytest.raises(DDPMError, match="is a file, not a folder"):
        check_output_folder(tmp_path / "grid.jpg", "run folder")
