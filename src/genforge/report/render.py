"""The HTML page: cards with pictures and curves, the metric table, verdicts and notes.

One self-contained file: every picture is embedded as a base64 PNG and the stylesheet
(``style.css`` beside this module) inline, so it opens anywhere with no network and no JavaScript.
"""

from __future__ import annotations

import base64
import html
import io
import math
from datetime import datetime
from importlib import resources
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from genforge import families
from genforge.errors import GenforgeError
from genforge.metrics.table import count_text
from genforge.report.collect import RunSummary, is_number
from genforge.report.table import labels, metric_table, notes, verdicts
from genforge.runfolder import atomic_write

STYLE = resources.files("genforge.report").joinpath("style.css").read_text(encoding="utf-8")

# Log keys that are not losses: bookkeeping, VQ health, augmentation and schedule values.
NOT_LOSSES = {
    "images_per_s",
    "codebook_usage",
    "codebook_perplexity",
    "dead_codes",
    "adv_weight",
    "lr",
    "augment_p",
    "r_t",
}

# ---------------------------------------------------------------------------------------------
# Pictures


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _series(records: list[dict], key: str) -> list[tuple[int, float]]:
    """(step, value) of ``key`` in step order (a resumed run's records are already de-duplicated)."""
    found = {r["step"]: float(r[key]) for r in records if is_number(r.get(key)) and isinstance(r.get("step"), int)}
    return sorted(found.items())


def curves_png(run: RunSummary) -> bytes | None:
    """Losses vs step, then panels for what was logged beside them: codebook usage (a quantizer's
    health), the augmentation probability (ADA's p and r_t), the Frechet distance during training."""
    losses: dict[str, tuple[list[int], list[float]]] = {}
    for record in run.logs:
        for key, value in record.items():
            if (
                key not in NOT_LOSSES
                and is_number(value)
                and math.isfinite(value)
                and isinstance(record.get("step"), int)
            ):
                steps, values = losses.setdefault(key, ([], []))
                steps.append(record["step"])
                values.append(float(value))
    panels: list[tuple[str, dict[str, list[tuple[int, float]]]]] = []
    for title, keys in (("codebook usage", ("codebook_usage",)), ("augmentation", ("augment_p", "r_t"))):
        series = {k: _series(run.logs, k) for k in keys}
        series = {k: v for k, v in series.items() if v}
        if series:
            panels.append((title, series))
    fds = _series(run.evals, "fd")
    if len(fds) > 1:
        panels.append(("Frechet distance (during training)", {"fd": fds}))
    if not losses and not panels:
        return None
    count = int(bool(losses)) + len(panels)
    fig = Figure(figsize=(3.2 * count, 2.4), dpi=100)
    FigureCanvasAgg(fig)
    index = 1
    if losses:
        ax = fig.add_subplot(1, count, index)
        for key, (steps, values) in list(losses.items())[:8]:
            ax.plot(steps, values, label=key, linewidth=1.2)
        ax.set_title("losses", fontsize=9)
        ax.legend(fontsize=7, frameon=False)
        index += 1
    for title, series in panels:
        ax = fig.add_subplot(1, count, index)
        index += 1
        for key, points in series.items():
            marker = "." if len(points) < 30 else None
            ax.plot([p[0] for p in points], [p[1] for p in points], linewidth=1.2, marker=marker, label=key)
        if len(series) > 1:
            ax.legend(fontsize=7, frameon=False)
        ax.set_title(title, fontsize=9)
    for ax in fig.axes:
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# HTML


def write_report(runs: list[RunSummary], out: Path, title: str = "genforge report") -> Path:
    """Write one self-contained HTML file atomically (temporary file, then rename)."""
    if not runs:
        raise GenforgeError("nothing to report: no runs given")
    return atomic_write(out, render(runs, title))


def render(runs: list[RunSummary], title: str = "genforge report") -> str:
    names = labels(runs)
    esc = html.escape
    when = datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>",
        f"<header><h1>{esc(title)}</h1><p>{esc(when)} · {len(runs)} run{'s' * (len(runs) > 1)}: "
        f"{esc(', '.join(f'{n} ({r.kind})' for n, r in zip(names, runs)))}</p></header><main>",
        '<h2>Runs</h2><div class="cards">',
        *(_card(name, run) for name, run in zip(names, runs)),
        "</div>",
        "<h2>Metrics</h2>",
        _table(runs, names),
    ]
    found = verdicts(runs)
    if found:
        parts.append("<h2>Verdict</h2><ul>" + "".join(f"<li>{esc(v)}</li>" for v in found) + "</ul>")
    caveats = notes(runs)
    if caveats:
        parts.append(
            '<h2>Notes</h2><ul class="notes">' + "".join(f"<li>{_code(esc(n))}</li>" for n in caveats) + "</ul>"
        )
    parts.append("</main></body></html>\n")
    return "\n".join(parts)


def _code(text: str) -> str:
    """`x` -> <code>x</code> in already escaped text."""
    pieces = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(pieces)) if len(pieces) % 2 else text


def _card(name: str, run: RunSummary) -> str:
    esc = html.escape
    params = run.total_parameters
    breakdown = ", ".join(f"{k} {count_text(v)}" for k, v in run.parameters.items())
    facts = {
        "steps": f"{run.step:,}",
        "wall time": f"{run.wall_seconds / 60:.1f} min" if run.wall_seconds is not None else "—",
        "parameters": f"{count_text(params)} ({breakdown})" if params is not None else "—",
        "data": _data_name(run),
        "folder": str(run.path),
    }
    if run.evaluation is not None:
        e = run.evaluation
        facts["evaluated"] = f"step {e.get('step', '?')}, {e.get('features', '?')} features, n={e.get('n', '?')}"
    dl = "".join(f"<dt>{esc(k)}</dt><dd>{esc(str(v))}</dd>" for k, v in facts.items())
    out = [
        f'<section class="card"><h3>{esc(name)}<span class="kind">{esc(run.kind)}</span></h3><dl class="facts">{dl}</dl>'
    ]
    caption = families.get(run.kind).grid_caption if run.kind in families.names() else "samples"
    out.append(_image(run.samples, f"{caption} ({run.samples.name})" if run.samples else caption, "grid"))
    if run.recon is not None:
        out.append(_image(run.recon, f"reconstructions ({run.recon.name})", "grid"))
    if run.classes is not None:
        out.append(_image(run.classes, "samples by class: one row per class (classes.png)", "grid"))
    curves = curves_png(run)
    if curves is not None:
        out.append(
            f'<figure><figcaption>training curves</figcaption><img class="curves" alt="training curves of {esc(name)}" src="{_data_uri(curves)}"></figure>'
        )
    else:
        out.append('<p class="missing">no training logs</p>')
    out.append("</section>")
    return "\n".join(out)


def _image(path: Path | None, caption: str, css: str) -> str:
    esc = html.escape
    if path is None:
        return f'<p class="missing">{esc(caption)}: no picture in samples/</p>'
    try:
        data = path.read_bytes()
    except OSError:
        return f'<p class="missing">{esc(caption)}: {esc(path.name)} is unreadable</p>'
    if not data.startswith(b"\x89PNG"):
        return f'<p class="missing">{esc(caption)}: {esc(path.name)} is not a PNG</p>'
    return f'<figure><figcaption>{esc(caption)}</figcaption><img class="{css}" alt="{esc(caption)}" src="{_data_uri(data)}"></figure>'


def _data_name(run: RunSummary) -> str:
    if run.evaluation is not None and run.evaluation.get("data"):
        return str(run.evaluation["data"])
    data = run.config.get("data")
    if isinstance(data, dict) and data.get("source"):
        return str(data["source"])
    if isinstance(run.config.get("vqvae"), str):  # a model of another run's codes
        return f"codes of {run.config['vqvae']}"
    return "—"


def _table(runs: list[RunSummary], names: list[str]) -> str:
    esc = html.escape
    head = '<tr><th class="metric">metric</th>' + "".join(f"<th>{esc(n)}</th>" for n in names) + "</tr>"
    body = []
    for row in metric_table(runs):
        hint = {"lower": "↓ lower is better", "higher": "↑ higher is better"}.get(row["better"], "reference")
        unit = f" ({row['unit']})" if row["unit"] else ""
        cells = [
            f'<td class="metric">{esc(row["metric"] + unit)}<small title="{hint}">{hint[0] if row["better"] else ""}</small></td>'
        ]
        for i, text in enumerate(row["display"]):
            css = "lead" if i == row["leader_index"] else ("na" if text == "—" else "")
            cells.append(f'<td class="{css}">{esc(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"
