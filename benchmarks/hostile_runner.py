"""Running one hostile-input case of benchmarks/hostile_inputs.py and judging its row.

A case is `python -m ddpm ARGS` in a subprocess whose working folder is the case's own folder
(the hostile files are crafted there, paths in ARGS are relative to it). Measured: exit code, wall
seconds, the child's peak RSS (`os.wait4`'s rusage; ru_maxrss is KiB on Linux), stderr, and the
files the run created, modified or deleted in the case folder (a snapshot of path, size, mtime_ns
and SHA-256 before and after).

The child runs under RLIMIT_DATA (default 3 GiB) so that a case that would allocate tens of GB on
this shared machine fails with a MemoryError instead of swapping; a correct refusal stays far
below it. Running out of memory is dirty even when a loader reports it in one line (CIFAR's reader
calls any exception a damaged file), so the limit never turns a bomb into a clean row. MPLCONFIGDIR points at one shared folder, so
matplotlib's font cache never depends on the case's (possibly unwritable) XDG_CACHE_HOME.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import os
import re
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parents[1]  # the repository whose src/ is tested
CLEAN_PEAK_MB = 1536.0
HASH_LIMIT = 64 << 20  # files up to this size are hashed; larger ones compare size and mtime
LOCK = ".lock"  # ddpm.train.run_lock.LOCK_NAME
CACHE = "cache"  # the case's XDG_CACHE_HOME, relative to its folder, unless the case sets one

Expect = Literal["refuse", "warn", "ok"]


@dataclass(frozen=True)
class Outcome:
    """What a finished case produced; handed to a case's own `check`."""

    folder: Path
    exit: int | None  # None: killed at the timeout
    stdout: str
    stderr: str


@dataclass(frozen=True)
class Case:
    """One hostile input. expect: refuse = exit 2 with one `ddpm: ` line on stderr; warn = exit 0
    and a `ddpm: ` line matching `warning`; ok = exit 0 (and `check`, if any, finds no problem)."""

    name: str
    args: list[str]  # after `python -m ddpm`, relative to the case folder
    expect: Expect
    craft: Callable[[Path], None] | None = None  # writes the hostile files into the case folder
    warning: str = ""  # regex searched in each `ddpm: ` line of stderr (warn cases)
    check: Callable[[Outcome], str] | None = None  # returns a problem, or ""
    cache: str = CACHE  # XDG_CACHE_HOME relative to the case folder
    needs_run: bool = False  # the case folder gets a copy of the tiny trained run (and featnet)
    fast: bool = False  # seconds when clean, no trained run, no big file: in the test subset
    limit: float = 60.0  # seconds within which a clean row finishes
    may_change: tuple[str, ...] = ()  # path prefixes (fnmatch) of files it may rewrite
    before: list[str] | None = None  # ddpm args run first in the folder (must exit 0), unjudged


@dataclass
class Row:
    case: str
    exit: int | None
    seconds: float
    peak_mb: float
    created: list[str] = field(default_factory=list)
    modified: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    appended: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    stderr_line: str = ""
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.problems


def escape(text: str) -> str:
    """Control characters (ESC, CR, ...) as Python escapes, so they never reach the terminal raw."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def child_env(folder: Path, cache: str, shared: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(ROOT / "src"), XDG_CACHE_HOME=str(folder / cache))
    env.update(MPLCONFIGDIR=str(shared / "matplotlib"), PYTHONUNBUFFERED="1")
    return env


def run_ddpm(args: list[str], **options) -> tuple[int | None, float, float]:
    """`python -m ddpm ARGS` (see run_python)."""
    return run_python(["-m", "ddpm", *args], **options)


def run_python(args: list[str], *, cwd: Path, env: dict[str, str], logs: Path, timeout: float,
               memory_limit: int) -> tuple[int | None, float, float]:  # fmt: skip
    """`python ARGS` in a new session under RLIMIT_DATA `memory_limit` bytes (0: none), stdout
    and stderr to logs.out/.err -> (exit code, or None when killed at `timeout` seconds, with
    the rest of its process group; wall seconds; peak RSS in MB)."""

    def limit_memory() -> None:
        if memory_limit:
            resource.setrlimit(resource.RLIMIT_DATA, (memory_limit, memory_limit))

    started, peak = time.perf_counter(), 0.0
    with open(f"{logs}.out", "wb") as out, open(f"{logs}.err", "wb") as err:
        child = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env,
                                 stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                 preexec_fn=limit_memory, start_new_session=True)  # fmt: skip
        timed_out = False
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - started > timeout:
                timed_out = True
                os.killpg(child.pid, signal.SIGKILL)
                _, status, usage = os.wait4(child.pid, 0)
                break
            peak = max(peak, _high_water_mb(child.pid))
            time.sleep(0.05)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, signal.SIGKILL)  # grandchildren left behind (data workers)
    seconds = time.perf_counter() - started
    # ru_maxrss carries the parent's RSS over the child's exec (the kernel keeps the old memory
    # map's high-water mark), so a child of a big process (pytest with torch) looked big; the
    # child's own VmHWM, polled, is the measure; ru_maxrss only if it ended before the first poll
    return (None if timed_out else child.returncode), seconds, peak or usage.ru_maxrss / 1024


def _high_water_mb(pid: int) -> float:
    """The peak resident memory (VmHWM) of process `pid`'s current program, in MB; 0 if gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    line = next((ln for ln in text.splitlines() if ln.startswith("VmHWM:")), None)
    return int(line.split()[1]) / 1024 if line else 0.0


def _sha(path: Path, size: int | None = None) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        remaining = size if size is not None else -1
        while remaining:
            chunk = f.read(1 << 20 if remaining < 0 else min(1 << 20, remaining))
            if not chunk:
                break
            digest.update(chunk)
            remaining -= len(chunk) if remaining > 0 else 0
    return digest.hexdigest()


Snapshot = dict[str, tuple[int, int, str]]  # relative path -> (size, mtime_ns, sha or "")


def snapshot(folder: Path) -> Snapshot:
    """Every file below `folder` (symlinks as themselves, never followed)."""
    files: Snapshot = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = Path(parent, name)
            stat = path.lstat()
            small = stat.st_size <= HASH_LIMIT and path.is_file() and not path.is_symlink()
            files[str(path.relative_to(folder))] = (
                stat.st_size, stat.st_mtime_ns, _sha(path) if small else ""
            )  # fmt: skip
    return files


def compare(folder: Path, before: Snapshot, after: Snapshot) -> dict[str, list[str]]:
    """created / modified / deleted, and two kinds of change that lose nothing: appended (grew,
    keeping its old bytes: a log, metrics.csv) and moved (its old content is in another file now,
    e.g. set aside as NAME.damaged-...)."""
    created = sorted(set(after) - set(before))
    modified, deleted, appended, moved = [], sorted(set(before) - set(after)), [], []
    for name in sorted(set(before) & set(after)):
        (old_size, _, old_sha), (new_size, _, new_sha) = before[name], after[name]
        if before[name] == after[name] or (old_sha and old_sha == new_sha):
            continue  # untouched, or touched with the same content
        if old_sha and new_size > old_size and _sha(folder / name, old_size) == old_sha:
            appended.append(name)
        else:
            modified.append(name)
    surviving = {sha for _, _, sha in after.values() if sha}
    for changed in (modified, deleted):
        moved += [n for n in changed if before[n][2] and before[n][2] in surviving]
        changed[:] = [n for n in changed if n not in moved]
    return dict(created=created, modified=modified, deleted=deleted, appended=appended,
                moved=sorted(moved))  # fmt: skip


def _stderr_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    if "Traceback" in stderr:
        return "traceback: " + (lines[-1] if lines else "")
    return lines[0] if lines else ""


def _stderr_problems(case: Case, outcome: Outcome) -> list[str]:
    problems, stderr = [], outcome.stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    if "Traceback" in stderr:
        problems.append("traceback")
    if re.search(r"MemoryError|(can't|cannot) allocate memory|out of memory", stderr, re.I):
        problems.append("ran out of memory")  # at the RLIMIT_DATA, even if reported in one line
    if re.search(r"[\x00-\x08\x0b-\x1f\x7f]", stderr):
        problems.append("raw control characters on stderr")
    if case.expect == "refuse" and not (len(lines) == 1 and lines[0].startswith("ddpm: ")):
        problems.append(f"{len(lines)} stderr lines, expected one `ddpm: ` line")
    if case.expect == "refuse" and outcome.exit == 2 and outcome.stdout.strip():  # --quiet: work
        problems.append(f"refused after working (stdout: {escape(outcome.stdout.strip()[:60])})")
    if case.expect == "warn":
        if any(not line.startswith("ddpm: ") for line in lines):
            problems.append("stderr lines that are not ddpm's (raw warnings?)")
        if not any(re.search(case.warning, line) for line in lines if line.startswith("ddpm: ")):
            problems.append(f"no warning matching {case.warning!r}")
    return problems


def _file_problems(case: Case, row: Row, cache_prefix: str) -> list[str]:
    """Nothing the user had may change (a cache may, and RunLock rewrites its .lock); a refusal
    writes nothing outside the cache; no writer leaves its temporary (.NAME.tmpPID) behind."""
    problems = []

    def expected(path: str) -> bool:
        allowed = (cache_prefix, *case.may_change)
        return Path(path).name == LOCK or any(fnmatch.fnmatch(path, p + "*") for p in allowed)

    lost = [p for p in row.modified + row.deleted if not expected(p)]
    if lost:
        problems.append(f"existing files changed: {', '.join(lost[:3])}")
    outputs = [p for p in row.created if not p.startswith(cache_prefix) and Path(p).name != LOCK]
    temporaries = [p for p in row.created if re.match(r"\..*\.tmp", Path(p).name)]
    if case.expect == "refuse" and outputs:
        problems.append(f"refused but created {', '.join(outputs[:3])}")
    elif temporaries:
        problems.append(f"temporary files left: {', '.join(temporaries[:3])}")
    if case.expect == "refuse" and (locks := [p for p in row.created if Path(p).name == LOCK]):
        row.notes.append(f"left {locks[0]} (the run lock's file; a rerun into its folder works)")
    return problems


def judge(case: Case, outcome: Outcome, row: Row, *, cache_prefix: str) -> list[str]:
    """The reasons the row is dirty (none: clean); harmless findings go to row.notes."""
    problems = []
    want = 2 if case.expect == "refuse" else 0
    if outcome.exit is None:
        problems.append(f"timeout after {row.seconds:.0f} s")
    elif outcome.exit != want:
        problems.append(f"exit {outcome.exit}, expected {want}")
    problems += _stderr_problems(case, outcome)
    if row.peak_mb > CLEAN_PEAK_MB:
        problems.append(f"peak RSS {row.peak_mb:.0f} MB > {CLEAN_PEAK_MB:.0f}")
    if row.seconds > case.limit and outcome.exit is not None:
        problems.append(f"{row.seconds:.0f} s > limit {case.limit:.0f} s")
    problems += _file_problems(case, row, cache_prefix)
    if case.check is not None and (problem := case.check(outcome)):
        problems.append(problem)
    return problems


def run_case(case: Case, folder: Path, *, shared: Path, timeout: float, memory_limit: int) -> Row:
    """Snapshot, run, snapshot again, judge. `folder` already holds the crafted files."""
    before = snapshot(folder)
    logs = shared / "logs" / case.name
    logs.parent.mkdir(parents=True, exist_ok=True)
    env = child_env(folder, case.cache, shared)
    code, seconds, peak = run_ddpm(case.args, cwd=folder, env=env, logs=logs, timeout=timeout,
                                   memory_limit=memory_limit)  # fmt: skip
    stdout, stderr = (Path(f"{logs}{suffix}").read_bytes().decode("utf-8", "replace")
                      for suffix in (".out", ".err"))  # fmt: skip
    outcome = Outcome(folder=folder, exit=code, stdout=stdout, stderr=stderr)
    row = Row(case.name, code, seconds, peak, **compare(folder, before, snapshot(folder)))
    row.stderr_line = escape(_stderr_line(outcome.stderr))
    row.problems = judge(case, outcome, row, cache_prefix=case.cache.split("/")[0] + "/")
    return row


def format_table(rows: list[Row]) -> str:
    """Fixed-width: case, exit, seconds, peak MB, files (+created ~modified -deleted), verdict,
    stderr's first line (a traceback's last line) truncated to 90 characters."""
    head = f"{'case':28s} {'exit':>4s} {'sec':>6s} {'peak MB':>8s} {'files':>10s} {'verdict':7s} stderr"
    out = [head, "-" * len(head)]
    for r in rows:
        files = f"+{len(r.created)} ~{len(r.modified)} -{len(r.deleted)}"
        code = "T/O" if r.exit is None else str(r.exit)
        verdict = "clean" if r.clean else "DIRTY"
        line = r.stderr_line if len(r.stderr_line) <= 90 else r.stderr_line[:87] + "..."
        out.append(f"{r.case:28s} {code:>4s} {r.seconds:6.1f} {r.peak_mb:8.0f} {files:>10s} "
                   f"{verdict:7s} {line}")  # fmt: skip
    return "\n".join(out)
