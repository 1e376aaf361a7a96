"""README.md's promises that are about the README itself: the configuration table is every key with
its real default and resume rule, every link points inside the repository at something that exists,
and the Python example runs as written."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ddpm.config import RESUMABLE_KEYS, RunConfig, to_dict

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))


def config_rows() -> dict[str, tuple[str, str]]:
    """`key` -> (default, resume) from README's configuration table."""
    rows = re.findall(r"^\| `(\w+\.\w+)` \| `([^`]*)` \| (yes|) \|", README.read_text(), re.M)
    return {key: (default, resume) for key, default, resume in rows}


def shown(value: object) -> str:
    """A default as the table writes it: strings bare ("" when empty), the rest as JSON."""
    if isinstance(value, str):
        return value or '""'
    return json.dumps(value)


def test_the_configuration_table_lists_every_key_with_its_default_and_resume_rule():
    rows = config_rows()
    config = to_dict(RunConfig())
    keys = {f"{section}.{key}" for section, values in config.items() for key in values}
    assert set(rows) == keys, (
        f"missing {sorted(keys - set(rows))}, stale {sorted(set(rows) - keys)}"
    )
    for key, (default, resume) in rows.items():
        section, name = key.split(".")
        assert default == shown(config[section][name]), key
        assert (resume == "yes") == (key in RESUMABLE_KEYS), key


def anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: p.name)
def test_every_link_points_inside_the_repository_at_something_that_exists(page):
    text = page.read_text()
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    assert links or page != README
    for link in links:
        assert not re.match(r"[a-z]+:", link), f"{page.name}: {link} points outside the repository"
        path, _, fragment = link.partition("#")
        target = (page.parent / path).resolve() if path else page
        assert target.is_relative_to(ROOT) and target.exists(), f"{page.name}: {link}"
        if fragment and target.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", target.read_text(), re.M)
            assert fragment in {anchor(h) for h in headings}, f"{page.name}: no heading #{fragment}"


@pytest.mark.slow
def test_the_python_example_runs(tmp_path, monkeypatch):
    code = re.search(r"^## Python\n.*?```python\n(.*?)```", README.read_text(), re.M | re.S)
    assert code, "README has no Python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(code.group(1), "README.md", "exec"), namespace)  # noqa: S102 (our own README)
    images, other = namespace["images"], namespace["other"]
    assert images.shape == other.shape == (16, 1, 8, 8)
    assert (tmp_path / "runs/api/grid.png").stat().st_size > 0


def test_where_things_live_names_every_module():
    """A newcomer finds each command, sampler, dataset and metric from README's layout map."""
    block = re.search(r"^## Where things live\n+```\n(.*?)```", README.read_text(), re.M | re.S)
    assert block, "README has no layout map"
    package = ROOT / "src" / "ddpm"
    modules = {
        p.name for p in package.rglob("*.py") if p.name not in ("__init__.py", "__main__.py")
    }
    packages = {f"{p.parent.name}/" for p in package.rglob("__init__.py") if p.parent != package}
    named = set(re.findall(r"[\w.]+\.py|\w+/", block.group(1)))
    assert not modules - named, f"not in README's layout map: {sorted(modules - named)}"
    assert not packages - named, f"not in README's layout map: {sorted(packages - named)}"


@pytest.mark.slow
def test_the_own_images_command_trains(isolated, tmp_path):
    """README's command for a folder of your own images, as written, on a folder of RGB PNGs
    (cut to two steps and one checkpoint)."""
    import shlex

    import numpy as np
    from PIL import Image

    from ddpm.cli import main

    command = re.search(r"^(ddpm train --data-dir .*?)\n```", README.read_text(), re.M | re.S)
    assert command, "README has no own-images command"
    photos = Path("photos")  # the README's relative path, inside the isolated working folder
    photos.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):  # a small folder still has a test image
        pixels = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(photos / f"{i}.png")
    args = shlex.split(command.group(1).replace("\\\n", " "))[1:]
    short = ["train.num_steps=2", "train.batch_size=4", "train.checkpoint_every=2",
             "train.sample_every=100000", "train.val_images=4", "train.warmup_steps=1"]  # fmt: skip
    assert main([*args, "--quiet", *[a for s in short for a in ("--set", s)]]) == 0
    assert (Path("runs/photos/checkpoints") / "step_00000002.safetensors").is_file()
