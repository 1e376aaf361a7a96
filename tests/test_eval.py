"""`ddpm eval` and `ddpm featnet` on tiny runs and real image files; metrics against
torch-fidelity's own entry point on the same image folders with the same feature extractor."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch_fidelity
from PIL import Image
from tiny import TINY_MODEL, sets

from ddpm.cli import main
from ddpm.config import load_preset
from ddpm.data import load_dataset
from ddpm.errors import DDPMError
from ddpm.metrics.extractors import FEATNET_EXTRACTOR, register, resolve_feature_space
from ddpm.metrics.featnet import FeatNetInfo, accuracy, save_featnet, train_featnet
from ddpm.metrics.fidelity import extract_features, fidelity_metrics
from ddpm.metrics.sample_files import load_samples, save_npz

RUN_SETTINGS = [
    *TINY_MODEL,
    "train.num_steps=6",
    "train.batch_size=16",
    "train.log_every=3",
    "train.warmup_steps=2",
    "train.checkpoint_every=6",
    "train.sample_every=6",
    "train.num_sample_images=2",
]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def digits():
    config = load_preset("digits").data
    return load_dataset(config, "train"), load_dataset(config, "test")


@pytest.fixture(scope="module")
def featnet_file(tmp_path_factory, digits) -> Path:
    train, test = digits
    net = train_featnet(train, epochs=3, batch_size=64, seed=0)
    info = FeatNetInfo(
        name="digits-test", dataset="digits", image_size=8, channels=1, num_classes=10,
        widths=(32, 64, 128), test_accuracy=accuracy(net, test), epochs=3,
        train_images=len(train),
    )  # fmt: skip
    return save_featnet(net, info, tmp_path_factory.mktemp("featnet") / "digits.safetensors")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    args = ["train", "--dataset", "digits", "--out", str(out), "--quiet"]
    assert main([*args, *sets(RUN_SETTINGS)]) == 0
    return out


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ddpm: error:"), err
    return err


def write_pngs(images: torch.Tensor, folder: Path) -> Path:
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image[0].numpy(), mode="L").save(folder / f"{i:05d}.png")
    return folder


@pytest.mark.slow
def test_featnet_classifies_digits_and_loads_back(featnet_file, digits):
    space = resolve_feature_space(str(featnet_file))
    assert space.extractor == FEATNET_EXTRACTOR and space.label.startswith("featnet:digits-test@")
    from ddpm.metrics.featnet import load_featnet

    net, info = load_featnet(str(featnet_file))
    assert info.test_accuracy > 0.85 and info.test_accuracy == accuracy(net, digits[1])


@pytest.mark.slow
def test_same_set_scores_zero_and_noise_raises_fid_monotonically(featnet_file, digits):
    space = resolve_feature_space(str(featnet_file))
    images = digits[0].images[:600]
    reference = extract_features(images, space, ["features", "logits"])
    generator = torch.Generator().manual_seed(0)
    fids = []
    for sigma in (0, 16, 48, 96):
        noisy = images.float() + sigma * torch.randn(images.shape, generator=generator)
        noisy = noisy.round().clamp(0, 255).to(torch.uint8)
        features = extract_features(noisy, space, ["features", "logits"])
        values = {
            v.metric: v.value for v in fidelity_metrics(features, reference, ["fid", "pr"], space)
        }
        fids.append(values["fid"])
        if sigma == 0:
            assert abs(values["fid"]) < 1e-3
            assert values["precision"] == values["recall"] == 1.0
    assert fids == sorted(fids) and fids[-1] > 10 * max(fids[1], 1e-3), fids


@pytest.mark.slow
def test_metrics_match_torch_fidelity_on_image_folders(featnet_file, digits, tmp_path):
    """Our path (tensors, cached features, torch-fidelity's metric functions) against
    torch_fidelity.calculate_metrics reading two PNG folders with the same extractor."""
    register()
    train, test = digits
    generated = write_pngs(train.images[:300], tmp_path / "a")
    real = write_pngs(test.images, tmp_path / "b")
    theirs = torch_fidelity.calculate_metrics(
        input1=str(generated), input2=str(real), fid=True, prc=True, cuda=False, cache=False,
        verbose=False, save_cpu_ram=True, feature_extractor=FEATNET_EXTRACTOR,
        feature_extractor_weights_path=str(featnet_file),
    )  # fmt: skip
    space = resolve_feature_space(str(featnet_file))
    ours = fidelity_metrics(
        extract_features(load_samples(generated), space, ["features"]),
        extract_features(load_samples(real), space, ["features"]),
        ["fid", "pr"],
        space,
    )
    ours = {v.metric: v.value for v in ours}
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-3)
    assert ours["precision"] == pytest.approx(theirs["precision"], rel=1e-3)
    assert ours["recall"] == pytest.approx(theirs["recall"], rel=1e-3)


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_eval_samples_with_the_run_s_sampler_unless_told(featnet_file, tmp_path):
    """No --sampler/--steps: the run's sample.* (here ddim at 3 steps), as ddpm sample does."""
    run = tmp_path / "run"
    sampler = ["sample.sampler=ddim", "sample.steps=3"]
    assert main(["train", "--dataset", "digits", "--out", str(run), "--quiet",
                 *sets([*RUN_SETTINGS, *sampler])]) == 0  # fmt: skip
    args = ["eval", "--run", str(run), "--features", str(featnet_file), "--n", "20"]
    assert main([*args, "--metrics", "fid", "--quiet", "--out", str(tmp_path / "e")]) == 0
    (row,) = read_rows(tmp_path / "e" / "metrics.csv")
    assert (row["sampler"], row["steps"]) == ("ddim", "3")


@pytest.mark.slow
def test_eval_writes_every_metric_with_its_provenance(tiny_run, featnet_file, capsys):
    args = ["eval", "--run", str(tiny_run), "--features", str(featnet_file), "--n", "40"]
    args += ["--sampler", "ddim", "--steps", "3", "--bpd-n", "8", "--bpd-timesteps", "4"]
    args += ["--metrics", "fid,is,kid,pr,bpd,val-loss", "--precision", "fp32", "--quiet"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "features computed and cached" in out
    rows = read_rows(tiny_run / "eval" / "metrics.csv")
    by_metric = {r["metric"]: r for r in rows}
    assert list(by_metric) == ["fid", "is", "kid", "precision", "recall", "bpd", "val-loss"]
    fid = by_metric["fid"]
    assert fid["feature_space"].startswith("featnet:digits-test@") and (
        fid["sampler"],
        fid["steps"],
    ) == ("ddim", "3")
    assert re.search(r"/step6-ddim-3-uniform-n40-seed0-fp32-ema-[0-9a-f]{12}\.npz$", fid["samples"])
    assert (fid["nfe"], fid["n"], fid["seed"], fid["checkpoint_step"]) == ("3", "40", "0", "6")
    made = ("ema", "spacing", "eta", "guidance", "class_label", "precision", "compile", "device")
    assert [fid[c] for c in made] == ["True", "uniform", "0.0", "1.0", "", "fp32", "False", "cpu"]
    assert fid["checkpoint"] == str(tiny_run / "checkpoints" / "step_00000006.safetensors")
    assert fid["reference"] == "digits:test:297"
    bpd = by_metric["bpd"]
    assert float(bpd["value"]) > 0 and float(bpd["spread"]) > 0
    assert bpd["samples"] == "test split, 5/1000 t"
    assert (bpd["ema"], bpd["precision"], bpd["sampler"], bpd["eta"]) == ("True", "fp32", "", "")
    assert (by_metric["val-loss"]["ema"], by_metric["val-loss"]["checkpoint"]) == (
        "True",
        fid["checkpoint"],
    )
    # a second eval reads the reference features from the cache, reuses the samples file and
    # reproduces every number, val-loss to the last digit
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "read from the cache" in out and "samples: reusing" in out
    rows = read_rows(tiny_run / "eval" / "metrics.csv")
    assert len(rows) == 14
    for first, second in zip(rows[:7], rows[7:]):
        assert first["value"] == second["value"], first["metric"]


@pytest.mark.slow
def test_samples_from_npz_and_png_folder_score_alike(
    tiny_run, featnet_file, digits, tmp_path, capsys
):
    images = digits[0].images[:50]
    npz = save_npz(images, tmp_path / "s.npz")
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(images):  # grey images saved as RGB, as many tools write them
        Image.fromarray(image[0].numpy()).convert("RGB").save(folder / f"{i}.png")
    values = []
    for source in (npz, folder):
        out = tmp_path / f"eval-{source.name}"
        args = ["eval", "--dataset", "digits", "--samples", str(source), "--out", str(out)]
        assert main([*args, "--features", str(featnet_file), "--metrics", "fid", "--quiet"]) == 0
        values.append(float(read_rows(out / "metrics.csv")[0]["value"]))
    assert values[0] == pytest.approx(values[1], rel=1e-6)  # same images, another order


def test_npz_round_trip_keeps_the_layout(tmp_path):
    images = torch.randint(0, 256, (5, 3, 4, 6), dtype=torch.uint8)
    path = save_npz(images, tmp_path / "x.npz")
    assert np.load(path)["arr_0"].shape == (5, 4, 6, 3)
    assert torch.equal(load_samples(path), images)


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--metrics", "fid,nope"], "unknown metric nope"),
        (["--features", "no-such-net"], "ddpm featnet train --dataset no-such-net"),
        (
            ["--inception-weights", "/nonexistent/w.pth"],
            "weights-inception-2015-12-05-6726825d.pth",
        ),
    ],
)
def test_bad_eval_options_get_one_line(tiny_run, extra, expected, capsys, tmp_path):
    args = ["eval", "--run", str(tiny_run), "--out", str(tmp_path), "--n", "40", "--quiet"]
    assert main([*args, *extra]) == 2
    assert expected in one_error_line(capsys)
    assert not (tmp_path / "samples").exists()  # refused before generating any sample


def test_bad_sample_files_get_one_line(tiny_run, featnet_file, tmp_path, capsys):
    base = ["eval", "--run", str(tiny_run), "--features", str(featnet_file), "--quiet"]
    np.savez(tmp_path / "wrong.npz", arr_0=np.zeros((4, 9, 9, 1), np.uint8))
    np.savez(tmp_path / "other.npz", images=np.zeros((4, 8, 8, 1), np.uint8))
    np.savez(tmp_path / "float.npz", arr_0=np.zeros((4, 8, 8, 1), np.float32))
    (tmp_path / "broken.npz").write_bytes(b"not a zip file")
    cases = {
        "wrong.npz": "samples are 1x9x9 but the reference images are 1x8x8",
        "other.npz": "has no arr_0",
        "float.npz": "arr_0 must be uint8",
        "broken.npz": "is not a readable .npz",
        "missing.npz": "samples not found",
    }
    for name, expected in cases.items():
        assert main([*base, "--samples", str(tmp_path / name)]) == 2
        assert expected in one_error_line(capsys), name


def test_model_metrics_need_a_run(tmp_path, capsys):
    samples = save_npz(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), tmp_path / "s.npz")
    args = ["eval", "--dataset", "digits", "--samples", str(samples), "--metrics", "bpd"]
    assert main(args) == 2
    assert "give --run" in one_error_line(capsys)


@pytest.mark.slow
def test_featnet_cli_trains_lists_and_refuses_a_corrupt_file(capsys, tmp_path):
    assert main(["featnet", "train", "--dataset", "digits", "--epochs", "1", "--quiet"]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert main(["featnet", "list"]) == 0
    assert "featnet:digits@" in capsys.readouterr().out
    assert main(["featnet", "train", "--dataset", "digits", "--epochs", "1", "--quiet"]) == 2
    assert "pass --force to replace it" in one_error_line(capsys)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    samples = save_npz(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), tmp_path / "s.npz")
    args = ["eval", "--dataset", "digits", "--samples", str(samples), "--features", str(corrupt)]
    assert main(args) == 2
    assert "is not a readable feature network" in one_error_line(capsys)


@pytest.mark.slow
def test_sweep_scores_with_fid_in_a_feature_space(tiny_run, featnet_file, tmp_path):
    out = tmp_path / "sweep"
    args = ["sweep", "--run", str(tiny_run), "--samplers", "ddim", "--steps", "2,4", "--n", "20"]
    assert main([*args, "--features", str(featnet_file), "--out", str(out), "--quiet"]) == 0
    rows = read_rows(out / "sweep.csv")
    assert [r["steps"] for r in rows] == ["2", "4"]
    assert all(r["metric"].startswith("FID (featnet:digits-test@") for r in rows)
    assert all(float(r["score"]) >= 0 for r in rows)


# --- the sample cache is keyed on everything that makes the samples, and metrics.csv records it


@pytest.fixture(scope="module")
def conditional_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "conditional"
    args = ["train", "--dataset", "digits", "--out", str(out), "--quiet"]
    assert main([*args, *sets([*RUN_SETTINGS, "model.num_classes=10"])]) == 0
    return out


CHEAP_EVAL = ["--sampler", "ddim", "--steps", "2", "--n", "12", "--metrics", "fid", "--quiet"]

# (option, the column it shows in and its value there); each must make new samples
VARIANTS = [
    (["--no-ema"], "ema", "False"),
    (["--eta", "0.5"], "eta", "0.5"),
    (["--spacing", "trailing"], "spacing", "trailing"),
    (["--precision", "bf16"], "precision", "bf16"),
    (["--seed", "1"], "seed", "1"),
    (["--steps", "3"], "steps", "3"),
    (["--n", "13"], "n", "13"),
    (["--class", "4"], "class_label", "4"),
    (["--class", "3", "--guidance", "2"], "guidance", "2.0"),
]


@pytest.mark.parametrize("variant, column, value", VARIANTS, ids=lambda v: str(v))
@pytest.mark.slow
def test_eval_generates_new_samples_for_every_generation_option(
    conditional_run, featnet_file, tmp_path, capsys, variant, column, value
):
    base = ["eval", "--run", str(conditional_run), "--features", str(featnet_file)]
    base += ["--out", str(tmp_path), "--precision", "fp32", *CHEAP_EVAL]
    first = ["--class", "3"] if "--guidance" in variant else []
    assert main([*base, *first]) == 0
    assert main([*base, *variant]) == 0  # later options win over the base's
    out = capsys.readouterr().out
    assert "samples: reusing" not in out and out.count("generated in") == 2
    assert ("(raw weights)" in out) == (column == "ema")  # the table says so too
    rows = read_rows(tmp_path / "metrics.csv")
    assert [r["metric"] for r in rows] == ["fid", "fid"] and rows[1][column] == value
    assert rows[0][column] != value and rows[0]["samples"] != rows[1]["samples"]
    first_images, second_images = (load_samples(r["samples"]) for r in rows)
    if column != "n":  # the images differ too (the old cache handed back the first set)
        assert not torch.equal(first_images, second_images)
    assert main([*base, *variant]) == 0  # the same options again: the file is reused
    assert "samples: reusing" in capsys.readouterr().out


@pytest.mark.slow
def test_two_runs_scored_into_one_folder_do_not_share_samples(featnet_file, tmp_path, capsys):
    """Same settings and step, other weights (another training seed), one --out folder."""
    for seed in (0, 7):
        run = tmp_path / f"run{seed}"
        train = ["train", "--dataset", "digits", "--out", str(run), "--quiet"]
        assert main([*train, *sets([*RUN_SETTINGS, f"train.seed={seed}"])]) == 0
        args = ["eval", "--run", str(run), "--features", str(featnet_file)]
        assert main([*args, "--out", str(tmp_path / "eval"), *CHEAP_EVAL]) == 0
    assert "samples: reusing" not in capsys.readouterr().out
    rows = read_rows(tmp_path / "eval" / "metrics.csv")
    assert rows[0]["samples"] != rows[1]["samples"]
    assert [Path(r["checkpoint"]).parent.parent.name for r in rows] == ["run0", "run7"]


OLD_COLUMNS = [
    "metric", "value", "spread", "feature_space", "samples", "sampler", "steps", "nfe", "n",
    "reference", "seed", "checkpoint_step", "time",
]  # fmt: skip


@pytest.mark.slow
def test_an_older_metrics_csv_gets_the_new_columns_and_keeps_its_rows(
    tiny_run, featnet_file, tmp_path, caplog
):
    old_rows = [
        ["fid", "12.5", "", "inception-v3", "a.npz", "ddim", "50", "50", "100", "x:test:10", "0",
         "500", "2024-01-01T00:00:00+00:00", "kept"],
        ["bpd", "3.25", "0.01", "-", "test split", "", "", "", "8", "x:test:10", "", "500",
         "2024-01-02T00:00:00+00:00", ""],
    ]  # fmt: skip
    path = tmp_path / "metrics.csv"
    with path.open("w", newline="") as f:
        csv.writer(f).writerows([[*OLD_COLUMNS, "note"], *old_rows])  # "note": the user's own
    args = ["eval", "--run", str(tiny_run), "--features", str(featnet_file), "--out", str(tmp_path)]
    assert main([*args, *CHEAP_EVAL]) == 0
    assert "adding the columns ema, spacing, eta" in caplog.text
    caplog.clear()
    with path.open(newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header[: len(OLD_COLUMNS) - 1] == OLD_COLUMNS[:-1] and header[-1] == "note"
    assert {"ema", "eta", "guidance", "class_label", "precision", "checkpoint"} <= set(header)
    as_dicts = [dict(zip(header, row)) for row in rows]
    for old, new in zip(old_rows, as_dicts):
        assert [new[c] for c in [*OLD_COLUMNS, "note"]] == old
        assert new["ema"] == new["eta"] == new["precision"] == ""  # unknown for old rows
    assert len(rows) == 3 and as_dicts[2]["ema"] == "True" and as_dicts[2]["note"] == ""
    assert main([*args, *CHEAP_EVAL, "--no-ema"]) == 0  # now an ordinary append
    assert "adding the columns" not in caplog.text
    assert [r["ema"] for r in read_rows(path)] == ["", "", "True", "False"]


def test_a_metrics_csv_that_is_not_ours_is_refused_before_any_work(
    tiny_run, featnet_file, tmp_path, capsys
):
    (tmp_path / "metrics.csv").write_text("name,score\nmine,1\n")
    args = ["eval", "--run", str(tiny_run), "--features", str(featnet_file), "--out", str(tmp_path)]
    assert main([*args, *CHEAP_EVAL]) == 2
    assert "is not a metrics.csv of ddpm eval" in one_error_line(capsys)
    assert not (tmp_path / "samples").exists()
    assert (tmp_path / "metrics.csv").read_text() == "name,score\nmine,1\n"


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--eta", "2"], "--eta must be in [0, 1]"),
        (["--sampler", "heun", "--eta", "0.5"], "--eta applies to the ddim sampler only"),
        (["--class", "3"], "--class needs a class-conditional model"),
        (["--guidance", "2"], "--guidance needs --class"),
    ],
)
def test_bad_generation_options_fail_before_sampling(tiny_run, tmp_path, capsys, extra, expected):
    args = ["eval", "--run", str(tiny_run), "--out", str(tmp_path), *CHEAP_EVAL, *extra]
    assert main(args) == 2
    assert expected in one_error_line(capsys)
    assert not (tmp_path / "samples").exists()


def test_generation_options_do_not_apply_to_a_samples_file(tmp_path, capsys):
    samples = save_npz(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), tmp_path / "s.npz")
    args = ["eval", "--dataset", "digits", "--samples", str(samples), "--out", str(tmp_path)]
    assert main([*args, "--eta", "0.5"]) == 2
    assert "not with --samples" in one_error_line(capsys)


def test_evaluate_is_a_python_call(tiny_run, featnet_file, tmp_path):
    """ddpm eval's work without the command line: plain parameters in, rows out."""
    from ddpm.eval_samples import SampleRequest
    from ddpm.evaluate import Reference, evaluate
    from ddpm.generate import sample_config
    from ddpm.loaded_run import load_run

    run = load_run(tiny_run)
    request = SampleRequest(sample_config(run.config, sampler="ddim", steps=2), n=12, seed=1)
    kwargs = dict(features=str(featnet_file), out_dir=tmp_path, quiet=True)
    rows = evaluate(["fid", "val-loss"], run=run, samples=request,
                    reference=Reference(limit=50), **kwargs)  # fmt: skip
    assert [r.metric for r in rows] == ["fid", "val-loss"]
    fid = rows[0]
    assert (fid.sampler, fid.steps, fid.n, fid.seed, fid.reference) == (
        "ddim",
        2,
        12,
        1,
        "digits:test:50",
    )
    assert fid.value > 0 and Path(fid.samples).parent == tmp_path / "samples"
    again = evaluate(["fid"], samples=fid.samples, **kwargs,
                     reference=Reference(limit=50, data=run.config.data))  # fmt: skip
    assert again[0].value == pytest.approx(fid.value) and again[0].sampler is None
    with pytest.raises(DDPMError, match="without a run"):
        evaluate(["bpd"], samples=fid.samples, reference=Reference(data=run.config.data))
