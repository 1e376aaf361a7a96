"""Training on a folder of your own images with nothing else to say (`ddpm train --data-dir DIR`):
the folder survey, the model.preset=auto rule, the small-folder split, and the commands as a user
types them, on folders these tests write (RGB of two sizes with a corrupt file, grey PNGs, classes
in sub-folders)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny import sets

from ddpm.cli import main
from ddpm.config import RunConfig, UNetConfig, check_unet_config, from_dict, load_preset, to_dict
from ddpm.config_auto import AUTO_KEYS, auto_image_size, auto_unet_keys
from ddpm.data.folder import split_files
from ddpm.data.folder_survey import survey_folder
from ddpm.errors import DDPMError

SHORT = ["train.num_steps=2", "train.batch_size=4", "train.checkpoint_every=2",
         "train.sample_every=100000", "train.val_images=2", "train.warmup_steps=1",
         "sample.steps=2"]  # fmt: skip


def write_images(
    folder: Path, count: int, size: tuple[int, int], mode: str, start: int = 0
) -> None:
    """`count` random images of size (width, height) in PIL `mode` ("RGB" or "L")."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(start)
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    for i in range(start, start + count):
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"{i}.png")


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """RGB PNGs of two sizes (20x16 most common, 32x32 fewer) and one corrupt file."""
    root = tmp_path / "photos"
    write_images(root, 9, (20, 16), "RGB")
    write_images(root, 4, (32, 32), "RGB", start=100)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


def saved_config(run: Path) -> RunConfig:
    return from_dict(json.loads((run / "config.json").read_text()))


# ---- the rule --------------------------------------------------------------------------------


def test_auto_rule_reproduces_the_measured_presets():
    """The rule is the digits and Fashion-MNIST networks (measured fastest to good images here),
    scaled: at 8 and 28 pixels it gives exactly their architecture keys, but for the Fashion-MNIST
    preset's linear attention, which diffusers cannot represent."""
    for preset, size in (("digits", 8), ("fashion-mnist", 28)):
        model = to_dict(load_preset(preset))["model"] | {"linear_attention": False}
        auto = json.loads(json.dumps(auto_unet_keys(size)))  # tuples as lists, as to_dict
        assert {k: model[k] for k in AUTO_KEYS} == auto, preset


@pytest.mark.parametrize("size", [8, 12, 16, 28, 32, 40, 64])
def test_every_folder_run_exports_to_diffusers(size):
    """The folder preset's objective (v-prediction) and every auto network map to diffusers."""
    from ddpm.interop.diffusers_unet import check_exportable

    check_exportable(from_dict({"data": {"image_size": size}}, base=load_preset("folder")))


@pytest.mark.parametrize("short_side", [1, 5, 8, 11, 12, 17, 26, 28, 30, 33, 48, 63, 64, 500])
def test_every_size_picked_from_a_folder_gets_a_network_that_takes_it(short_side):
    size = auto_image_size(short_side)
    assert 8 <= size <= 64 and size % 4 == 0
    assert abs(size - min(max(short_side, 8), 64)) <= 2  # the nearest multiple of 4
    keys = auto_unet_keys(size)
    config = from_dict({"model": {"preset": "auto"}, "data": {"image_size": size, "channels": 3}})
    check_unet_config(config.model, image_size=size, in_channels=3)
    assert min(keys["attention_resolutions"]) >= 4  # halved down to 4..7 pixels


def test_auto_keys_given_beside_it_win_and_a_later_size_reapplies_the_rule():
    config = from_dict(
        {"model": {"preset": "auto", "base_channels": 64}, "data": {"image_size": 32}}
    )
    assert config.model.base_channels == 64 and config.model.channel_mult == (1, 2, 4, 4)
    bigger = from_dict({"data": {"image_size": 64}}, base=config)
    assert bigger.model.channel_mult == (1, 2, 4, 4, 4)
    # a layer that names neither model.preset nor data.image_size (a resume) changes nothing
    assert from_dict({"train": {"num_steps": 9}}, base=config).model == config.model
    manual = from_dict({"model": {"preset": "manual"}, "data": {"image_size": 8}})
    assert manual.model == UNetConfig()


def test_a_network_that_cannot_take_the_data_says_what_to_set():
    with pytest.raises(DDPMError, match=r"model.attention_resolutions \[16\].*model.preset=auto"):
        from_dict({"data": {"image_size": 8}, "model": {"attention_resolutions": [16]}})


# ---- the survey and the split ----------------------------------------------------------------


def test_survey_reads_the_common_size_channels_and_skips_a_corrupt_file(photos, tmp_path):
    survey = survey_folder(photos)
    assert (survey.num_images, survey.num_unreadable) == (14, 1)
    assert survey.common_size == (20, 16) and survey.num_common == 9
    assert (survey.image_size, survey.channels) == (16, 3)
    assert "14 images" in survey.describe() and "1 unreadable" in survey.describe()
    grey = tmp_path / "grey"
    write_images(grey, 5, (12, 12), "L")
    assert (survey_folder(grey).channels, survey_folder(grey).image_size) == (1, 12)
    write_images(grey, 1, (12, 12), "RGB", start=50)  # one colour image: the folder is colour
    assert survey_folder(grey).channels == 3


def test_survey_of_a_folder_without_readable_images_is_one_line(tmp_path):
    (tmp_path / "junk").mkdir()
    with pytest.raises(DDPMError, match="no images"):
        survey_folder(tmp_path / "junk")
    (tmp_path / "junk" / "a.png").write_bytes(b"garbage")
    with pytest.raises(DDPMError, match="none of the 1 image files"):
        survey_folder(tmp_path / "junk")


@pytest.mark.parametrize("count", [2, 3, 7, 19, 30])
def test_a_small_folder_still_has_a_test_image_and_the_splits_partition_it(tmp_path, count):
    paths = [tmp_path / f"img{i}.png" for i in range(count)]
    train, test = (split_files(tmp_path, paths, split) for split in ("train", "test"))
    assert test and train and sorted(train + test) == sorted(paths) and not set(train) & set(test)


def test_a_folder_of_one_image_is_refused_saying_how_many_it_needs(tmp_path):
    with pytest.raises(DDPMError, match="at least 2"):
        split_files(tmp_path, [tmp_path / "only.png"], "test")


# ---- the commands, as typed ------------------------------------------------------------------


@pytest.mark.slow
def test_train_on_a_folder_with_nothing_else_to_say(isolated, photos, capsys):
    """RGB of two sizes and a corrupt file: size and channels read off the folder, the auto U-Net
    printed with its parameter count and images/s, trained, then sampled with the run's default
    sampler into one PNG per image."""
    assert main(["train", "--data-dir", str(photos), "--out", "run", "--quiet", *sets(SHORT)]) == 0
    out = capsys.readouterr().out
    assert "-> trained at 16x16, 3 channels" in out
    assert "model.preset=auto" in out and "M parameters" in out and "images/s here" in out
    config = saved_config(Path("run"))
    assert (config.data.dataset, config.data.image_size, config.data.channels) == ("folder", 16, 3)
    assert config.model.preset == "auto" and config.model.channel_mult == (1, 2, 4)
    assert main(["sample", "--run", "run", "--n", "3", "--out-dir", "images", "--npz", "s.npz",
                 "--quiet"]) == 0  # fmt: skip
    assert "sampler: dpmpp-2m, 2 steps" in capsys.readouterr().out  # the run's sample.*
    assert sorted(p.name for p in Path("images").iterdir()) == [f"00000{i}.png" for i in range(3)]
    assert not Path("samples.png").exists()  # --out-dir alone: no grid
    arrays = np.load("s.npz")["arr_0"]
    for i in range(3):  # the same pixels as --npz, at the images' own size
        assert np.array_equal(np.asarray(Image.open(f"images/00000{i}.png")), arrays[i])


@pytest.mark.slow
def test_grey_folder_with_overrides_and_labels_from_subfolders(isolated, tmp_path, capsys):
    root = tmp_path / "grey"
    write_images(root / "cats", 6, (12, 12), "L")
    write_images(root / "dogs", 6, (12, 12), "L", start=10)
    args = ["train", "--data-dir", str(root), "--quiet", *sets(SHORT)]
    assert main([*args, "--out", "plain", "--dry-run"]) == 0
    plain = capsys.readouterr().out
    assert "trained at 12x12, 1 channel " in plain and "num_classes: 0" in plain
    assert main([*args, "--out", "labelled", "--labels-from-subfolders", "--image-size", "16"]) == 0
    assert "classes: 2 sub-folders (cats, dogs)" in capsys.readouterr().out
    config = saved_config(Path("labelled"))
    assert (config.data.image_size, config.data.channels) == (16, 1)
    assert config.model.num_classes == 2 and config.data.labels_from_subfolders
    assert main(["sample", "--run", "labelled", "--n", "2", "--class", "1", "--quiet"]) == 0
    assert Path("samples.png").is_file()


def test_labels_from_a_folder_without_class_folders_is_one_line(isolated, photos, capsys):
    code = main(["train", "--data-dir", str(photos), "--out", "r", "--labels-from-subfolders",
                 "--dry-run"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "at least 2 sub-folders" in err


def test_the_issue_s_bad_config_is_refused_at_config_time(isolated, capsys):
    """`--set sample.sampler=foo --set sample.steps=5000` used to pass --dry-run and kill the run
    at its first sample grid."""
    for pair, words in (("sample.sampler=foo", "sample.sampler"),
                        ("sample.steps=5000", "sample.steps must be at most")):  # fmt: skip
        code = main(["train", "--dataset", "digits", "--out", "r", "--set", pair, "--dry-run"])
        err = capsys.readouterr().err
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1
    assert not Path("r").exists()


def test_data_dir_reaches_every_dataset(isolated, capsys, tmp_path):
    """--data-dir sets data.data_dir for a named dataset too (here: where MNIST's files are)."""
    code = main(["train", "--dataset", "mnist", "--data-dir", str(tmp_path), "--out", "r",
                 "--dry-run"])  # fmt: skip
    assert code == 0 and f"data_dir: {tmp_path}" in capsys.readouterr().out


@pytest.mark.slow
def test_sample_takes_the_run_s_sampler_unless_told(isolated, tmp_path, capsys):
    """A run whose config names heun at 3 steps samples and sweeps with it; --steps still wins (eval:
    tests/test_eval.py::test_eval_samples_with_the_run_s_sampler_unless_told)."""
    from tiny import train_tiny

    run = train_tiny(tmp_path / "run", "sample.sampler=heun", "sample.steps=3")
    assert main(["sample", "--run", str(run), "--n", "2", "--quiet"]) == 0
    assert "sampler: heun, 3 steps" in capsys.readouterr().out
    assert main(["sample", "--run", str(run), "--n", "2", "--steps", "4", "--quiet"]) == 0
    assert "sampler: heun, 4 steps" in capsys.readouterr().out
    # sweep: the run's sampler first, then the usual comparison, each once
    assert main(["sweep", "--run", str(run), "--steps", "2", "--n", "4", "--out", "sw",
                 "--quiet"]) == 0  # fmt: skip
    rows = Path("sw/sweep.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in rows] == ["heun", "ddim", "dpmpp-2m"]


def test_eval_and_featnet_read_a_folder_s_size_as_train_does(photos):
    """`--dataset folder --data-dir DIR` for eval's reference and featnet: the survey's size and
    channels unless given (it used to demand --image-size)."""
    from ddpm.cli.args import data_config

    data = data_config("folder", str(photos), None, None)
    assert (data.dataset, data.image_size, data.channels) == ("folder", 16, 3)
    assert data_config("folder", str(photos), 8, 1).image_size == 8
    with pytest.raises(DDPMError, match="needs --data-dir"):
        data_config("folder", None, 16, 3)


def test_a_class_conditional_folder_run_saved_before_the_key_keeps_its_labels():
    """Runs saved before data.labels_from_subfolders took labels from sub-folders always: their
    config (without the key) still means labels, so they resume and score as they trained."""
    old = to_dict(from_dict({"data": {"dataset": "folder"}, "model": {"num_classes": 3}}))
    del old["data"]["labels_from_subfolders"]
    assert from_dict(old).data.labels_from_subfolders
    old["data"]["labels_from_subfolders"] = False  # said explicitly: kept
    assert not from_dict(old).data.labels_from_subfolders
    unconditional = to_dict(from_dict({"data": {"dataset": "folder"}}))
    del unconditional["data"]["labels_from_subfolders"]
    assert not from_dict(unconditional).data.labels_from_subfolders


@pytest.mark.slow
def test_quiet_training_shows_no_decoding_bar(isolated, tmp_path, capfd):
    """--quiet: no bar at all, the decoding of a large folder (2,000 files and more) included."""
    root = tmp_path / "many"
    root.mkdir()
    pixels = np.zeros((8, 8), dtype=np.uint8)
    for i in range(2300):  # about 2,185 in the training split
        Image.fromarray(pixels + i % 200).save(root / f"{i}.png")
    tiny = ["train.num_steps=1", "train.batch_size=2", "train.checkpoint_every=1",
            "train.sample_every=100000", "train.val_images=0", "train.warmup_steps=1"]  # fmt: skip
    assert main(["train", "--data-dir", str(root), "--out", "r", "--quiet", *sets(tiny)]) == 0
    assert "decoding images" not in capfd.readouterr().err
