"""The report as one self-contained HTML page: inline CSS, images as data: URIs, no script and
nothing fetched. Every string read from the run folder (config values, file names, CSV cells,
the command line) passes through `esc` (html.escape) before it reaches the page.
"""

from __future__ import annotations

import base64
import json
import math
import shlex
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..checkpoint import CheckpointStatus
from .collect import Picture, RunData

MAX_TIMELINE = 24  # grids shown in the timeline: evenly spaced, the newest always among them
QUALITY_COLUMNS = ("step", "train_seconds", "n", "sampler", "nfe", "feature_space", "fid",
                   "fid_std", "kid", "kid_std", "precision", "recall")  # fmt: skip
METRIC_COLUMNS = ("metric", "value", "spread", "feature_space", "sampler", "steps", "nfe", "n",
                  "reference", "checkpoint_step", "time")  # fmt: skip

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;
 background:#f4f5f7;color:#1d2330}
main{max-width:1160px;margin:0 auto;padding:20px 24px 48px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:0 0 10px}
section{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:16px 18px;
 margin:14px 0}
.sub{color:#5b6473;margin:0 0 8px} .none{color:#8a6d00;font-style:italic}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin-top:10px}
.card{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:18px} .card span{color:#5b6473;font-size:12px}
img{max-width:100%} img.px{image-rendering:pixelated}
.pair{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
.pair>div{flex:1 1 300px} .pair img{width:100%;max-width:520px}
.timeline{display:flex;gap:10px;overflow-x:auto;padding-bottom:6px}
figure{margin:0;text-align:center;flex:0 0 auto} figure img{width:150px;display:block}
figcaption{font-size:12px;color:#5b6473}
table{border-collapse:collapse;font-size:13px;width:100%}
th,td{border-bottom:1px solid #e6e9ee;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f7f8fa;font-weight:600} th.num,td.num{text-align:right;font-variant-numeric:tabular-nums}
.ok{color:#1a7f37;font-weight:600} .bad{color:#c62828;font-weight:600}
code,pre{font:12px/1.4 ui-monospace,Menlo,Consolas,monospace}
pre{background:#f7f8fa;border:1px solid #e6e9ee;border-radius:6px;padding:8px;overflow-x:auto;
 white-space:pre-wrap;word-break:break-all}
.cols{columns:2 420px;column-gap:18px} .cols table{break-inside:avoid;margin-bottom:10px}
details summary{cursor:pointer;color:#3451b2}
"""


def esc(value: object) -> str:
    """Text from the run folder, made inert in HTML (quotes too: it may land in an attribute)."""
    import html

    return html.escape(str(value), quote=True)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def none_yet(what: str) -> str:
    return f'<p class="none">{esc(what)}</p>'


def picture(item: Picture, *, alt: str, pixelated: bool = True) -> str:
    """An <img> with the file inlined, or a line saying why it cannot be shown."""
    if item.problem:
        return none_yet(f"{item.path.name}: {item.problem}")
    try:
        blob = item.path.read_bytes()
    except OSError as error:
        return none_yet(f"{item.path.name}: unreadable ({error.strerror or error})")
    klass = ' class="px"' if pixelated else ""
    return f'<img{klass} alt="{esc(alt)}" src="{data_uri(blob)}">'


def figure_img(png: bytes | None, *, alt: str, missing: str) -> str:
    return f'<img alt="{esc(alt)}" src="{data_uri(png)}">' if png else none_yet(missing)


def _short(text: str) -> str:
    """A number as metrics.csv holds it (full float precision) shown to 6 significant digits."""
    try:
        value = float(text)
    except ValueError:
        return text
    return text if value.is_integer() else f"{value:.6g}"


def table(header: Sequence[str], rows: Sequence[Sequence[object]], numeric: set[int]) -> str:
    head = "".join(
        f'<th class="num">{esc(h)}</th>' if i in numeric else f"<th>{esc(h)}</th>"
        for i, h in enumerate(header)
    )
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{esc(v)}</td>' if i in numeric else f"<td>{esc(v)}</td>"
            for i, v in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: float | None, spec: str = ".4g", missing: str = "none yet") -> str:
    return missing if value is None or not math.isfinite(value) else format(value, spec)


def summary(data: RunData) -> str:
    last = data.log[-1] if data.log else None
    best_val = min((v for _, v in data.val if math.isfinite(v)), default=None)
    fids = [float(r["fid"]) for r in data.quality]
    cards = [
        ("step", str(data.step)),
        ("training loss (last)", _fmt(last.loss if last else None)),
        ("validation loss (best)", _fmt(best_val)),
        ("FID (best)", _fmt(min(fids) if fids else None, ".3g")),
        ("minutes", _fmt(last.minutes if last else None, ".1f")),
        ("images/s (last)", _fmt(last.images_per_s if last else None, ".0f")),
    ]
    if data.sessions:  # as the newest session ran
        newest = data.sessions[-1]
        machine = newest.get("machine") if isinstance(newest.get("machine"), dict) else {}
        cards.append(("precision", str(newest.get("precision", "?"))))
        cards.append(("device", str((machine or {}).get("device", "?"))))
    items = "".join(f'<div class="card"><b>{esc(v)}</b><span>{esc(k)}</span></div>'
                    for k, v in cards)  # fmt: skip
    return f'<div class="cards">{items}</div>'


def samples_section(data: RunData, strip_hint: str) -> str:
    latest = (
        f"<h3>Latest grid (step {data.grids[-1].step})</h3>"
        + picture(data.grids[-1], alt=f"samples at step {data.grids[-1].step}")
        if data.grids
        else "<h3>Latest grid</h3>"
        + none_yet("none yet: a grid is written every train.sample_every steps")
    )
    if data.strip is not None:
        strip = (
            f"<h3>Progressive denoising (step {data.strip.step})</h3>"
            '<p class="sub">per image, top row x<sub>t</sub> from noise to image, bottom row '
            "the predicted x<sub>0</sub></p>" + picture(data.strip, alt="progressive denoising")
        )
    else:
        strip = "<h3>Progressive denoising</h3>" + none_yet(strip_hint)
    return (
        f'<section id="samples"><h2>Samples</h2><div class="pair"><div>{latest}</div>'
        f"<div>{strip}</div></div></section>"
    )


def timeline_section(grids: Sequence[Picture]) -> str:
    if not grids:
        return f'<section id="timeline"><h2>Samples during training</h2>{none_yet("none yet")}</section>'
    shown = list(grids)
    if len(shown) > MAX_TIMELINE:
        picks = {round(i * (len(shown) - 1) / (MAX_TIMELINE - 1)) for i in range(MAX_TIMELINE)}
        shown = [g for i, g in enumerate(grids) if i in picks]
    note = (
        f" (showing {len(shown)} of {len(grids)}, evenly spaced)" if len(shown) < len(grids) else ""
    )
    items = "".join(
        f"<figure>{picture(g, alt=f'step {g.step}')}<figcaption>step {g.step}</figcaption></figure>"
        for g in shown
    )
    return (
        f'<section id="timeline"><h2>Samples during training</h2>'
        f'<p class="sub">the EMA weights\' grid at each train.sample_every{esc(note)}</p>'
        f'<div class="timeline">{items}</div></section>'
    )


def quality_section(data: RunData, figure: bytes | None) -> str:
    parts = ['<section id="quality"><h2>Sample quality</h2>']
    if data.quality:
        parts.append(figure_img(figure, alt="quality curve", missing="none yet"))
        rows = [[r.get(c, "") for c in QUALITY_COLUMNS] for r in data.quality]
        parts.append("<h3>During training (eval/during_training.csv)</h3>")
        parts.append(table(QUALITY_COLUMNS, rows, {0, 1, 2, 4, 6, 7, 8, 9, 10, 11}))
    else:
        parts.append(
            none_yet("none yet: set train.eval_every (e.g. 500 or 10m) for a quality curve")
        )
    if data.metrics:
        rows = [[_short(r.get(c, "")) for c in METRIC_COLUMNS] for r in data.metrics]
        parts.append("<h3>ddpm eval (eval/metrics.csv)</h3>")
        parts.append(table(METRIC_COLUMNS, rows, {1, 2, 5, 6, 7, 9}))
    parts.append("</section>")
    return "".join(parts)


def checkpoints_section(checkpoints: Sequence[CheckpointStatus]) -> str:
    if not checkpoints:
        body = none_yet("none yet: the first is written at train.checkpoint_every steps")
    else:
        rows = []
        for c in checkpoints:
            status = (
                '<span class="ok">ok</span>'
                if c.ok
                else f'<span class="bad">corrupt</span> {esc(c.problem)}'
            )
            cells = [esc(c.path.name), esc("?" if c.step is None else c.step),
                     esc(f"{c.size / 1e6:.1f} MB"), status,
                     esc(_fmt(c.val_loss, missing="-")),
                     esc(_fmt(None if c.train_seconds is None else c.train_seconds / 60, ".1f", "-"))]  # fmt: skip
            rows.append("<tr>" + "".join(
                f'<td class="num">{v}</td>' if i in (1, 2, 4, 5) else f"<td>{v}</td>"
                for i, v in enumerate(cells)) + "</tr>")  # fmt: skip
        names = ("file", "step", "size", "checksum", "validation loss", "training minutes")
        head = "".join(f'<th class="num">{h}</th>' if i in (1, 2, 4, 5) else f"<th>{h}</th>"
                       for i, h in enumerate(names))  # fmt: skip
        body = f"<table><tr>{head}</tr>{''.join(rows)}</table>"
    return f'<section id="checkpoints"><h2>Checkpoints</h2>{body}</section>'


def _command(session: dict[str, Any]) -> str:
    argv = session.get("command")
    if isinstance(argv, list) and all(isinstance(a, str) for a in argv):
        return shlex.join(argv)
    return "not recorded (started from Python)"


def run_section(data: RunData) -> str:
    """The command, each session's machine and precision."""
    if not data.sessions:
        body = none_yet("command and machine: not recorded (the run predates sessions.jsonl)")
        return f'<section id="run"><h2>Command and machine</h2>{body}</section>'
    first = data.sessions[0]
    parts = [f"<h3>Command</h3><pre>{esc(_command(first))}</pre>",
             f'<p class="sub">in {esc(first.get("cwd", "?"))}, {esc(first.get("time", "?"))}</p>']  # fmt: skip
    rows = []
    for s in data.sessions:
        found = s.get("machine")
        machine: dict[str, Any] = found if isinstance(found, dict) else {}
        cpu = f"{machine.get('cpu', '?')} ({machine.get('cpus', '?')} CPUs)"
        rows.append([s.get("time", "?"), s.get("start_step", "?"), _command(s), cpu,
                     machine.get("cpu_flags", "?"), machine.get("gpu") or machine.get("device", "?"),
                     s.get("precision", "?"), s.get("world_size", "?"), machine.get("torch", "?")])  # fmt: skip
    header = ("started", "from step", "command", "CPU", "speed flags", "device", "precision",
              "processes", "torch")  # fmt: skip
    parts.append("<h3>Sessions (start and each resume)</h3>" + table(header, rows, {1, 7}))
    return f'<section id="run"><h2>Command and machine</h2>{"".join(parts)}</section>'


def config_section(config: dict[str, Any] | None) -> str:
    if config is None:
        return (
            f'<section id="config"><h2>Configuration</h2>{none_yet("config.json: none")}</section>'
        )
    tables = []
    for name, values in config.items():
        if isinstance(values, dict):
            rows = [[f"{name}.{k}", json.dumps(v)] for k, v in values.items()]
        else:
            rows = [[name, json.dumps(values)]]
        tables.append(table(("key", "value"), rows, set()))
    raw = json.dumps(config, indent=2)
    return (
        '<section id="config"><h2>Configuration (config.json, resolved)</h2>'
        f'<div class="cols">{"".join(tables)}</div>'
        f"<details><summary>config.json</summary><pre>{esc(raw)}</pre></details></section>"
    )


def render(data: RunData, figures: dict[str, bytes | None], *, strip_hint: str) -> str:
    """The whole page. figures: "loss", "speed", "quality" -> PNG bytes or None."""
    dataset = ""
    if data.config and isinstance(data.config.get("data"), dict):
        dataset = f" &middot; {esc(data.config['data'].get('dataset', '?'))}"
    notes = "".join(f"<li>{esc(n)}</li>" for n in data.notes)
    curves = (
        '<section id="curves"><h2>Training</h2>'
        + figure_img(figures.get("loss"), alt="loss curve", missing="loss: none yet (log.csv has no rows)")
        + figure_img(figures.get("speed"), alt="images per second", missing="images/s: none yet")
        + ("" if data.val else none_yet("validation loss: none yet (at each checkpoint, with train.val_images > 0)"))
        + "</section>"
    )  # fmt: skip
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>ddpm run {esc(Path(data.run_dir).name)}</title><style>{CSS}</style></head><body><main>"
        f"<h1>ddpm run <code>{esc(data.run_dir)}</code></h1>"
        f'<p class="sub">report written {esc(stamp)}{dataset}</p>{summary(data)}'
        + (f'<section id="notes"><h2>Notes</h2><ul>{notes}</ul></section>' if notes else "")
        + samples_section(data, strip_hint)
        + curves
        + timeline_section(data.grids)
        + quality_section(data, figures.get("quality"))
        + checkpoints_section(data.checkpoints)
        + run_section(data)
        + config_section(data.config)
        + "</main></body></html>\n"
    )
