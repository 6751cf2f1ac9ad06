"""A training run as one self-contained HTML page: status, metrics, throughput, loss curves,
validation curves and the checkpoints kept (which one is best), sample grids over time, the logged
values and the recipe.

Everything is read from the run directory as it is at that moment, so the report works on a run
that is still going (a half-written last line of ``log.jsonl`` is ignored) or was interrupted.
Images are inlined as ``data:`` URIs: the file can be mailed or archived alone. Loss curves need
matplotlib (the ``report`` extra); without it the page says so and keeps the table of values.
"""

import base64
import html
import io
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from p2p.errors import P2PError, install_extra
from p2p.images.eight_bit import encode_image, open_image
from p2p.metrics import METRICS_FILE  # written by `p2p eval run`
from p2p.paths import atomic_path
from p2p.recipe import load_recipe
from p2p.weights import checkpoint as ckpt

MAX_SAMPLES = 12  # sample grids shown over time; more are thinned out evenly
TABLE_ROWS = 20  # rows of the table of logged values
INLINE_PNG_MAX = 300_000  # bytes; larger sample PNGs are inlined as JPEG to keep the page light
CURVES = [  # (log.jsonl key, panel title, smoothed)
    ("g_gan", "G GAN loss", True), ("g_l1", "G L1 loss", True),
    ("g_feat", "G feature-matching loss", True), ("g_vgg", "G VGG loss", True),
    ("d_real", "D loss on real pairs", True), ("d_fake", "D loss on generated pairs", True),
    ("lr", "learning rate", False), ("it_per_s", "iterations / s", True),
]
OPTIONAL_CURVES = {"g_feat", "g_vgg"}  # logged only by runs with train.lambda_feat / lambda_vgg
COLUMNS = {"g_gan": "G GAN", "g_l1": "G L1", "g_feat": "G feat", "g_vgg": "G VGG",
           "d_real": "D real", "d_fake": "D fake", "lr": "lr", "it_per_s": "it/s"}
VAL_CURVES = [  # (log.jsonl key, panel title): validation, when the run has it
    ("val_l1", "validation L1 (lower is better)"),
    ("val_psnr", "validation PSNR, dB (higher is better)"),
    ("val_ssim", "validation SSIM (higher is better)"),
    ("val_lpips", "validation LPIPS (lower is better)"),
    ("val_fid", "validation FID (lower is better)"),
]
SAMPLE_NAME = re.compile(r"iter_(\d+)\.png")
# Text stays text (small, sharp), and ids are salted so the output is reproducible.
SVG_STYLE = {"svg.fonttype": "none", "svg.hashsalt": "p2p-report", "font.size": 9}


@dataclass
class Report:
    iteration: int  # last logged iteration (0 when nothing is logged yet)
    total: int  # train.iters of the recipe
    samples_shown: int
    samples_found: int
    curves: bool  # False when matplotlib is not installed
    unreadable: list[str] = field(default_factory=list)  # files left out, with the reason
    path: Path | None = None  # where write_report wrote the page


def read_log(path: Path) -> list[dict]:
    """The records of ``log.jsonl`` by iteration, the training losses and the validation of an
    iteration merged into one. Lines that are not complete records (the one being written right
    now) are skipped; when a resumed run logged an iteration again, the later values win."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    records = {}
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("iteration"), int):
            records.setdefault(record["iteration"], {}).update(record)
    return [records[i] for i in sorted(records)]


def spread(n: int, k: int) -> list[int]:
    """Up to ``k`` indices evenly spread over ``range(n)``, first and last included."""
    if n <= k:
        return list(range(n))
    if k == 1:
        return [n - 1]
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def _data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def loss_curves_svg(records: list[dict]) -> bytes | None:
    """The logged curves as an SVG figure; None when matplotlib is not installed."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        return None
    import numpy as np

    curves = logged_curves(records)
    with matplotlib.rc_context(SVG_STYLE):
        rows = (len(curves) + 1) // 2
        figure = Figure(figsize=(10, 2.5 * rows), layout="constrained")
        panels = list(figure.subplots(rows, 2, sharex=True).flat)
        for ax in panels[len(curves):]:  # an odd number of curves leaves one panel empty
            ax.set_visible(False)
        for ax, (key, title, smoothed) in zip(panels, curves, strict=False):
            points = [(r["iteration"], r[key]) for r in records
                      if isinstance(r.get(key), (int, float))]
            ax.set_title(title)
            ax.grid(alpha=0.3)
            if not points:
                continue
            x, y = np.array(points, dtype=float).T
            window = len(x) // 25 if smoothed else 1
            ax.plot(x, y, color="tab:blue", alpha=0.35 if window > 1 else 1.0, lw=1,
                    marker="." if len(x) < 30 else None)
            if window > 1:  # a trailing moving average over the noisy per-batch losses
                ax.plot(x[window - 1:], np.convolve(y, np.ones(window) / window, "valid"),
                        color="tab:blue", lw=1.5)
        for ax in panels[len(curves) - 2:len(curves)]:  # the bottom panel of each column
            ax.set_xlabel("iteration")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def logged_curves(records: list[dict]) -> list[tuple[str, str, bool]]:
    """``CURVES``, less the optional losses that ``records`` never logged."""
    return [curve for curve in CURVES
            if curve[0] not in OPTIONAL_CURVES or any(curve[0] in r for r in records)]


def validation_curves_svg(records: list[dict], best_iteration: int | None) -> bytes | None:
    """One panel per validation metric the run logged, the best checkpoint's iteration marked;
    None without matplotlib or without validations."""
    present = [(key, title) for key, title in VAL_CURVES
               if any(isinstance(r.get(key), (int, float)) for r in records)]
    if not present:
        return None
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        return None

    with matplotlib.rc_context(SVG_STYLE):
        rows = (len(present) + 1) // 2
        figure = Figure(figsize=(10, 2.6 * rows), layout="constrained")
        panels = figure.subplots(rows, 2, sharex=True, squeeze=False).flat
        panels = list(panels)
        for ax in panels[len(present):]:  # an odd number of metrics leaves one panel empty
            ax.set_visible(False)
        for ax, (key, title) in zip(panels, present, strict=False):
            points = [(r["iteration"], r[key]) for r in records
                      if isinstance(r.get(key), (int, float))]
            ax.set_title(title)
            ax.grid(alpha=0.3)
            ax.plot(*zip(*points, strict=True), color="tab:green", lw=1.2, marker=".")
            if best_iteration is not None:
                ax.axvline(best_iteration, color="tab:red", lw=1, ls="--", label="best.pt")
                ax.legend(loc="best", frameon=False)
            ax.set_xlabel("iteration")
        buffer = io.BytesIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None})
    return buffer.getvalue()


def _when(timestamp) -> str:
    if not isinstance(timestamp, (int, float)):
        return "-"
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: float) -> str:
    hours, minutes = divmod(round(seconds / 60), 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


def _number(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return html.escape("-" if value is None else str(value))
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.3e}" if value and abs(value) < 1e-2 else f"{value:.4g}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    """An HTML table; cells are already escaped."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pairs(rows: list[tuple[str, str]]) -> str:
    """A two-column key/value table; values are already escaped."""
    return "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{v}</td></tr>"
                               for k, v in rows) + "</table>"


def _flatten(value, prefix: str = "") -> list[tuple[str, object]]:
    if isinstance(value, dict):
        return [item for key, inner in value.items()
                for item in _flatten(inner, f"{prefix}.{key}" if prefix else str(key))]
    return [(prefix, value)]


def _metrics_section(run_dir: Path, unreadable: list[str], validated: bool) -> str:
    path = run_dir / METRICS_FILE
    if not path.is_file():
        below = (" The validation scores are under <i>Validation and checkpoints</i> below."
                 if validated else "")
        return ("<p class=note>No FID and IS of the published protocol yet: <code>p2p eval run "
                f"--recipe RECIPE --checkpoint RUN_DIR</code> stores them here.{below}</p>")
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        unreadable.append(f"{METRICS_FILE}: {exc}")
        return f"<p class=note>{METRICS_FILE} could not be read.</p>"
    return _pairs([(key, _number(value)) for key, value in _flatten(metrics)])


def _throughput_section(records: list[dict], recipe, total: int) -> str:
    records = [r for r in records if "it_per_s" in r]  # training records, not validations alone
    speeds = sorted(r["it_per_s"] for r in records if isinstance(r.get("it_per_s"), (int, float)))
    device = next((r["device"] for r in reversed(records) if r.get("device")), None)
    rows = [("device", html.escape(str(device)) if device else
             f"not recorded (recipe: train.device = {html.escape(recipe.train.device)})"),
            ("batch size", _number(recipe.data.batch_size))]
    if speeds:
        median, last = speeds[len(speeds) // 2], records[-1].get("it_per_s")
        rows += [("iterations / s (median of logged windows)", _number(median)),
                 ("images / s (median)", _number(median * recipe.data.batch_size)),
                 ("iterations / s (latest)", _number(last))]
        left = total - records[-1]["iteration"]
        if left > 0 and isinstance(last, (int, float)) and last > 0:
            rows.append(("time left at the latest speed", _duration(left / last)))
    if records:
        rows += [("first logged", _when(records[0].get("time"))),
                 ("last logged", _when(records[-1].get("time")))]
    return _pairs(rows)


def _log_table(records: list[dict]) -> str:
    records = [r for r in records if "g_l1" in r]
    if not records:
        return "<p class=note>Nothing logged yet.</p>"
    keys = [key for key, _, _ in logged_curves(records)]
    rows = [[_number(r["iteration"]), *(_number(r.get(k)) for k in keys), _when(r.get("time"))]
            for r in (records[i] for i in spread(len(records), TABLE_ROWS))]
    return _table(["iteration", *(COLUMNS[k] for k in keys), "time"], rows)


def _sample_figures(run_dir: Path, max_samples: int,
                    unreadable: list[str]) -> tuple[list[tuple[int, str]], int]:
    """(iteration, data URI) of the sample grids to show, and how many exist."""
    found = sorted((int(m.group(1)), path) for path in (run_dir / "samples").glob("iter_*.png")
                   if (m := SAMPLE_NAME.fullmatch(path.name)))
    shown = []
    for iteration, path in (found[i] for i in spread(len(found), max_samples)):
        try:
            image = open_image(path)
            data = path.read_bytes()
        except (P2PError, OSError) as exc:
            unreadable.append(f"{path.name}: {exc}")
            continue
        uri = (_data_uri(data, "image/png") if len(data) <= INLINE_PNG_MAX
               else _data_uri(encode_image(image, "JPEG"), "image/jpeg"))
        shown.append((iteration, uri))
    return shown, len(found)


def _validation_section(run_dir: Path, records: list[dict], val_every: int,
                        unreadable: list[str]) -> str:
    """Validation curves and values, and the checkpoints kept: which one is best."""
    validations = [r for r in records if "val_l1" in r]
    try:
        best = ckpt.best_metrics(run_dir)
    except P2PError as exc:
        unreadable.append(f"checkpoints/{ckpt.BEST}: {exc}")
        best = None
    parts = []
    if not validations:
        parts.append("<p class=note>" + (
            "No validation yet." if val_every else
            "No validation in this run: <code>train.val_every: N</code> scores the generator "
            "on held-out pairs every N iterations and keeps the best as "
            "<code>checkpoints/best.pt</code>.") + "</p>")
    else:
        svg = validation_curves_svg(validations, best["iteration"] if best else None)
        if svg is not None:
            parts.append(f'<img class=curves src="{_data_uri(svg, "image/svg+xml")}" '
                         'alt="validation curves">')
        keys = [key for key, _ in VAL_CURVES if any(key in r for r in validations)]
        rows = [[_number(r["iteration"]), *(_number(r.get(k)) for k in keys),
                 "best so far" if r.get("val_best") else ""]
                for r in (validations[i] for i in spread(len(validations), TABLE_ROWS))]
        parts.append(_table(["iteration", *(k[4:] for k in keys), ""], rows))
    kept = [("latest.pt", "the last checkpoint" if (run_dir / "checkpoints" / ckpt.LATEST)
             .is_file() else "none yet")]
    if best:
        values = ", ".join(f"{k} {_number(v)}" for k, v in best["metrics"].items())
        kept.append((ckpt.BEST, f"iteration {best['iteration']:,}, best by "
                                f"{html.escape(str(best['metric']))}: {values}"))
    history = ckpt.history(run_dir)
    if history:
        kept.append(("iter_NNNNNNNN.pt", ", ".join(f"{i:,}" for i in history)))
    parts += ["<h3>Checkpoints</h3>", _pairs(kept),
              f"<p class=note>Select one with <code>{html.escape(str(run_dir))}@best</code>, "
              "<code>@latest</code> or <code>@ITERATION</code> wherever a checkpoint is taken "
              "(translate, eval run, zoo export, model.init_from).</p>"]
    return "".join(parts)


STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222;
       padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { padding: 0.25em 0.8em; border-bottom: 1px solid #eee; text-align: left; }
td { font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; }
.note { color: #666; } .status { font-size: 1.1em; }
.grids { display: grid; grid-template-columns: repeat(auto-fill, minmax(240px, 1fr)); gap: 1em; }
figure { margin: 0; } figcaption { color: #666; text-align: center; }
img.sample { width: 100%; image-rendering: pixelated; border: 1px solid #ddd; }
img.latest { max-width: 100%; width: 720px; image-rendering: pixelated; }
img.curves { max-width: 100%; }
"""


def build_report(run_dir: Path, max_samples: int = MAX_SAMPLES) -> tuple[str, Report]:
    """The page's HTML, and a summary for the caller."""
    run_dir = Path(run_dir)
    if not (run_dir / "recipe.yaml").is_file():
        raise P2PError(f"{run_dir}: not a run directory (no recipe.yaml)",
                       "pass the folder p2p train wrote, e.g. runs/quickstart")
    recipe = load_recipe(run_dir / "recipe.yaml")
    records = read_log(run_dir / "log.jsonl")
    total = recipe.train.iters
    done = records[-1]["iteration"] if records else 0
    unreadable: list[str] = []
    samples, samples_found = _sample_figures(run_dir, max_samples, unreadable)
    svg = loss_curves_svg(records) if records else None

    if done >= total:
        status = f"finished: {done:,} iterations."
    elif done:
        status = (f"{done:,} of {total:,} iterations logged: still running, or stopped "
                  f"(continue with <code>p2p train --resume {html.escape(str(run_dir))}</code>).")
    else:
        status = "no iteration logged yet."
    checkpoint = run_dir / "checkpoints" / "latest.pt"
    status += (f" Latest checkpoint written {_when(checkpoint.stat().st_mtime)}."
               if checkpoint.is_file() else " No checkpoint yet.")

    parts = [f"<h1>{html.escape(recipe.name)}</h1>",
             f"<p class=status>{status}</p>",
             f"<p class=note>{html.escape(str(run_dir.resolve()))} · "
             f"{html.escape(recipe.data.path)} · {recipe.data.direction}</p>",
             "<h2>FID and IS (p2p eval run)</h2>",
             _metrics_section(run_dir, unreadable, any("val_l1" in r for r in records)),
             "<h2>Hardware and throughput</h2>", _throughput_section(records, recipe, total)]
    if samples:
        iteration, uri = samples[-1]
        parts += [f"<h2>Latest samples (iteration {iteration:,})</h2>",
                  "<p class=note>Each row: input | output | target.</p>",
                  f'<img class=latest src="{uri}" alt="samples at iteration {iteration}">']
    parts.append("<h2>Loss curves</h2>")
    if svg is not None:
        parts.append(f'<img class=curves src="{_data_uri(svg, "image/svg+xml")}" '
                     'alt="loss curves">')
    elif records:
        command = html.escape(install_extra("report"))
        parts.append(f"<p class=note>Curves need matplotlib: <code>{command}</code>. "
                     "The logged values are in the table below.</p>")
    else:
        parts.append("<p class=note>Nothing logged yet.</p>")
    parts += ["<h2>Validation and checkpoints</h2>",
              _validation_section(run_dir, records, recipe.train.val_every, unreadable)]
    parts.append("<h2>Samples over time</h2>")
    if samples:
        if samples_found > len(samples):
            parts.append(f"<p class=note>{len(samples)} of {samples_found} sample grids, "
                         "evenly spaced.</p>")
        figures = "".join(f'<figure><img class=sample src="{uri}" alt="iteration {it}">'
                          f"<figcaption>iteration {it:,}</figcaption></figure>"
                          for it, uri in samples)
        parts.append(f"<div class=grids>{figures}</div>")
    else:
        parts.append("<p class=note>No sample grids yet.</p>")
    parts += ["<h2>Logged values</h2>", _log_table(records),
              "<h2>Recipe</h2>",
              f"<pre>{html.escape((run_dir / 'recipe.yaml').read_text())}</pre>"]
    if unreadable:
        items = "".join(f"<li>{html.escape(line)}</li>" for line in unreadable)
        parts.append(f"<h2>Left out</h2><ul class=note>{items}</ul>")

    page = ("<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
            f"<title>{html.escape(recipe.name)} · p2p report</title>"
            f"<style>{STYLE}</style></head><body>\n" + "\n".join(parts) + "\n</body></html>\n")
    return page, Report(done, total, len(samples), samples_found, svg is not None, unreadable)


def write_report(run_dir: Path, out: Path | None = None,
                 max_samples: int = MAX_SAMPLES) -> Report:
    """Write the report of ``run_dir`` to ``out`` (default ``RUN_DIR/report.html``) atomically."""
    out = Path(out) if out is not None else Path(run_dir) / "report.html"
    page, report = build_report(run_dir, max_samples)
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
    report.path = out
    return report
