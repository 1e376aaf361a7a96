"""The run report in a real browser: headless Chromium (tests/browser.py) opens report.html of a
real tiny run with a quality curve; no console message, every image decoded, the curves there,
nothing fetched from outside the page. Skipped, saying why, where Chromium is absent."""

from __future__ import annotations

import re

import browser
import pytest
from tiny import quality_pairs, train_tiny, untrained_featnet

from ddpm.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    reason = browser.available()
    if reason:
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("browser")
    featnet = untrained_featnet(root / "featnet.safetensors")
    run = train_tiny(root / "run", "train.num_steps=8", "train.sample_every=4",
                     "train.checkpoint_every=4", *quality_pairs(featnet))  # fmt: skip
    assert main(["report", "--run", str(run)]) == 0
    return run / "report.html"


def test_the_probe_sees_console_messages_and_broken_images(tmp_path):
    """The checks below could pass vacuously if the probe saw nothing: a page with a console
    error and an image that does not decode must show both."""
    if browser.available():
        pytest.skip(browser.available())
    page = tmp_path / "bad.html"
    page.write_text('<html><body><img alt="broken" src="data:image/png;base64,AAAA">'
                    '<script>console.error("probe-error")</script></body></html>')  # fmt: skip
    result, console, _ = browser.probe(page, tmp_path)
    assert result["images"] == [{"alt": "broken", "complete": True, "width": 0, "height": 0,
                                 "inline": True}]  # fmt: skip
    assert any("probe-error" in line for line in console)


def test_the_report_loads_cleanly_with_every_image_decoded(report, tmp_path):
    result, console, dom = browser.probe(report, tmp_path)
    assert console == []
    images = result["images"]
    assert len(images) == 7  # grid, strip, loss, speed, the timeline (2), quality
    bad = [i for i in images if not (i["complete"] and i["width"] > 0 and i["height"] > 0)]
    assert bad == [], bad
    assert all(i["inline"] for i in images)
    alts = {i["alt"] for i in images}
    assert {"loss curve", "quality curve", "images per second", "progressive denoising"} <= alts
    assert {"step 4", "step 8"} <= alts  # the timeline


def test_the_report_needs_nothing_from_outside(report):
    page = report.read_text()
    assert "<script" not in page and "<link" not in page and "@import" not in page
    targets = re.findall(r"""\b(?:src|href)\s*=\s*["']?([^"'\s>]*)""", page)
    assert targets and all(t.startswith("data:image/png;base64,") for t in targets)
    assert "url(" not in page
