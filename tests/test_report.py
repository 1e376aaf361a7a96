"""The run report (ddpm.report): read from real run folders, whole or in pieces, damaged or
hostile, and never a traceback; the CLI, and the refresh at each checkpoint while training."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from tiny import train_tiny

from ddpm.checkpoint import inspect_checkpoint, save_checkpoint
from ddpm.cli import main
from ddpm.config import RunConfig, from_dict, to_dict
from ddpm.report import collect, write_report
from ddpm.report.collect import read_log
from ddpm.sessions import read_sessions

HOSTILE = '<script>alert(1)</script>"&'
LOG_HEADER = "step,loss,lr,grad_norm,images_per_s,elapsed_s,skipped_steps\n"


def write_config(run: Path, **data: str) -> None:
    config = from_dict({"data": data}) if data else RunConfig()
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(to_dict(config)))


def write_checkpoint(path: Path, step: int) -> Path:
    net, ema = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, step=step, config=to_dict(RunConfig()), model=net, ema=ema,
                    optimizer=None, val_loss=0.25, train_seconds=30.0)  # fmt: skip
    return path


def test_a_run_with_only_its_config_says_none_yet(tmp_path):
    run = tmp_path / "run"
    write_config(run)
    page = write_report(run).read_text()
    assert page.count("none yet") >= 5  # samples, strip, loss, timeline, quality, checkpoints
    assert "not recorded" in page  # a run without sessions.jsonl
    assert "<script" not in page and 'src="http' not in page


def test_an_empty_folder_still_gets_a_page(tmp_path):
    page = write_report(tmp_path).read_text()
    assert "config.json is missing" in page and "none yet" in page


def test_strings_from_the_run_folder_are_escaped(tmp_path):
    run = tmp_path / "run<img src=x onerror=alert(2)>"
    write_config(run, data_dir=HOSTILE)
    (run / "sessions.jsonl").write_text(json.dumps({"command": ["ddpm", "train", HOSTILE]}) + "\n")
    page = write_report(run).read_text()
    assert "<script>alert(1)" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "run&lt;img src=x onerror=alert(2)&gt;" in page


def test_checkpoints_show_step_size_and_checksum_status(tmp_path):
    run = tmp_path / "run"
    write_config(run)
    good = write_checkpoint(run / "checkpoints" / "step_00000004.safetensors", 4)
    bad = run / "checkpoints" / "step_00000008.safetensors"
    blob = bytearray(write_checkpoint(bad, 8).read_bytes())
    blob[-3] ^= 0xFF  # a flipped bit in the weights
    bad.write_bytes(bytes(blob))
    (run / "checkpoints" / "best.safetensors").write_bytes(b"\0" * 5)  # truncated to nothing
    assert inspect_checkpoint(good).ok and inspect_checkpoint(good).step == 4
    status = inspect_checkpoint(bad)
    assert not status.ok and "checksum mismatch" in status.problem and status.size == len(blob)
    page = write_report(run).read_text()
    assert page.count('class="ok">ok<') == 1 and page.count('class="bad">corrupt<') == 2
    assert "step_00000004.safetensors" in page and "best.safetensors" in page


def test_grids_that_do_not_decode_are_named_not_embedded(tmp_path):
    run = tmp_path / "run"
    write_config(run)
    (run / "samples").mkdir()
    Image.new("L", (16, 16), 128).save(run / "samples" / "step_00000004.png")
    (run / "samples" / "step_00000008.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"x" * 40)
    data = collect(run)
    assert [(g.step, bool(g.problem)) for g in data.grids] == [(4, False), (8, True)]
    page = write_report(run).read_text()
    assert page.count('alt="step 4"') == 1 and 'alt="step 8"' not in page
    assert "step_00000008.png: does not decode" in page


def test_minutes_run_on_across_resumed_sessions_and_torn_rows_are_left_out(tmp_path):
    (tmp_path / "log.csv").write_text(
        LOG_HEADER + "2,0.9,1e-4,1,100,6,0\n4,0.8,1e-4,1,100,12,0\n"
        "6,0.7,1e-4,1,100,3,0\n8,0.6,1e-4,1,100,9,0\n10,0.5,1e-4,1,abc,12,0\n12,0.4"
    )  # a resume after step 4 restarts elapsed_s; two damaged rows
    notes: list[str] = []
    points = read_log(tmp_path, [0, 4], notes)
    assert [p.step for p in points] == [2, 4, 6, 8]
    assert [round(p.minutes * 60) for p in points] == [6, 12, 15, 21]
    assert notes == ["log.csv: 2 row(s) that do not parse were left out"]


def test_a_session_start_separates_sessions_whose_clocks_did_not_go_back(tmp_path):
    (tmp_path / "log.csv").write_text(LOG_HEADER + "2,0.9,0,1,1,6,0\n4,0.8,0,1,1,30,0\n")
    points = read_log(tmp_path, [0, 2], [])
    assert [round(p.minutes * 60) for p in points] == [6, 36]


@pytest.mark.slow
def test_ddpm_report_writes_the_page_with_a_progressive_strip(tmp_path, tiny_run, capsys):
    run = shutil.copytree(tiny_run, tmp_path / "run")  # the shared run stays untouched
    assert main(["report", "--run", str(run)]) == 0
    assert capsys.readouterr().out.strip() == f"report: {run / 'report.html'}"
    assert (run / "progressive" / "step_00000004.png").is_file()
    page = (run / "report.html").read_text()
    assert 'alt="progressive denoising"' in page and 'alt="loss curve"' in page
    assert 'alt="samples at step 4"' in page and "ddpm train --dataset digits" in page
    out = tmp_path / "elsewhere.html"  # --out; --no-strip reuses the strip just made
    assert main(["report", "--run", str(run), "--out", str(out), "--no-strip"]) == 0
    assert 'alt="progressive denoising"' in out.read_text()


def test_ddpm_report_refuses_a_folder_that_is_no_run(tmp_path, capsys):
    assert main(["report", "--run", str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err
    assert main(["report", "--run", str(tmp_path / "nope")]) == 2


@pytest.mark.slow
def test_training_refreshes_the_report_and_records_each_session(tmp_path):
    run = train_tiny(tmp_path / "run", "train.checkpoint_every=2")
    page = (run / "report.html").read_text()
    assert "step_00000004.safetensors" in page and 'alt="loss curve"' in page
    assert "ddpm report --run" in page  # no strip yet: the page says how to make one
    sessions = read_sessions(run)
    assert len(sessions) == 1 and sessions[0]["command"][:4] == [
        "ddpm",
        "train",
        "--dataset",
        "digits",
    ]
    assert sessions[0]["start_step"] == 0 and sessions[0]["machine"]["device"] == "cpu"
    assert sessions[0]["precision"] in ("fp32", "bf16")
    before = (run / "report.html").stat().st_mtime_ns
    argv = ["train", "--resume", str(run), "--quiet", "--set", "train.num_steps=6",
            "--set", "train.report=false"]  # fmt: skip
    assert main(argv) == 0
    assert (run / "report.html").stat().st_mtime_ns == before  # train.report=false: untouched
    assert [s["start_step"] for s in read_sessions(run)] == [0, 4]
    assert read_sessions(run)[1]["command"] == ["ddpm", *argv]


@pytest.mark.slow
def test_a_report_that_cannot_be_written_never_stops_training(tmp_path, caplog):
    run = train_tiny(tmp_path / "run")
    (run / "report.html").unlink()
    (run / "report.html").mkdir()  # the atomic rename onto a folder fails
    with caplog.at_level(logging.WARNING):
        assert main(["train", "--resume", str(run), "--quiet", "--set", "train.num_steps=8"]) == 0
    assert "could not refresh" in caplog.text and "report.html" in caplog.text
    assert (run / "checkpoints" / "step_00000008.safetensors").is_file()


def test_a_checksum_cache_hashes_an_unchanged_checkpoint_once(tmp_path):
    run = tmp_path / "run"
    write_config(run)
    path = write_checkpoint(run / "checkpoints" / "step_00000004.safetensors", 4)
    cache: dict = {}
    assert [c.ok for c in collect(run, verified=cache).checkpoints] == [True]
    ((key, status),) = cache.items()
    cache[key] = dataclasses.replace(status, problem="from the cache")
    assert collect(run, verified=cache).checkpoints[0].problem == "from the cache"
    blob = bytearray(path.read_bytes())
    blob[-3] ^= 0xFF
    path.write_bytes(bytes(blob))  # rewritten: a new mtime, verified again
    assert [c.ok for c in collect(run, verified=cache).checkpoints] == [False]
    assert collect(run).checkpoints[0].ok is False  # no cache: always verified


def test_metrics_csv_numbers_are_shown_to_six_significant_digits():
    from ddpm.report.page import _short

    assert _short("2.5650952969246745") == "2.5651" and _short("0.000123456789") == "0.000123457"
    assert _short("1705") == "1705" and _short("folder:test:2968") == "folder:test:2968"
    assert _short("") == "" and _short("nan") == "nan"
