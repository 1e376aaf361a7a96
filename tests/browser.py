"""Headless Chromium (Debian's /usr/bin/chromium) driven from its command line, no WebDriver: load
a page, let an injected script write what it measured into the DOM, dump the DOM, and read the
page's console messages from Chromium's log on stderr. Also a full-page screenshot."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# root has no user namespaces for the sandbox here; the page is our own file, offline
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         "--disable-extensions", "--disable-background-networking"]  # fmt: skip
CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\] (.*)")
# injected after the page: on load, every <img> with its alt, whether it decoded and its size
PROBE = """<script>window.addEventListener('load', () => {
  const images = [...document.images].map(i => ({alt: i.alt, complete: i.complete,
    width: i.naturalWidth, height: i.naturalHeight, inline: i.src.startsWith('data:image/')}));
  const out = document.createElement('pre'); out.id = 'probe-result';
  out.textContent = JSON.stringify({images});
  document.body.appendChild(out);
});</script>"""


def available() -> str | None:
    """None when Chromium can run here, else why not (the reason a test skips with)."""
    if not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


def _run(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CHROMIUM, *FLAGS, *args], capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def probe(page: Path, work: Path) -> tuple[dict, list[str], str]:
    """Open a copy of `page` with PROBE appended (in `work`): (the probe's result, the page's
    console messages, the dumped DOM)."""
    copy = work / f"probed-{page.name}"
    copy.write_bytes(page.read_bytes().replace(b"</body>", PROBE.encode() + b"</body>"))
    result = _run(["--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
                   "--dump-dom", copy.resolve().as_uri()])  # fmt: skip
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', result.stdout, re.S)
    assert found, f"the probe did not run (exit {result.returncode}): {result.stderr[-2000:]}"
    console = [m.group(1) for line in result.stderr.splitlines() if (m := CONSOLE.search(line))]
    text = found.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">")
    return json.loads(text.replace("&amp;", "&")), console, result.stdout


def screenshot(page: Path, out: Path, *, width: int = 1200, height: int = 3000) -> Path:
    """A PNG of the page at width x height CSS pixels."""
    result = _run([f"--screenshot={out.resolve()}", f"--window-size={width},{height}",
                   page.resolve().as_uri()])  # fmt: skip
    assert out.is_file(), f"no screenshot (exit {result.returncode}): {result.stderr[-2000:]}"
    return out
