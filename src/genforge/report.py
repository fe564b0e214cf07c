"""HTML reports: one run, or several side by side, as a single self-contained file.

``collect`` reads what a run folder already holds (config, newest checkpoint's metadata and
tensor shapes, ``metrics.jsonl``, sample grids) without building a model or unpickling
anything; ``write_report`` turns summaries into one HTML file with every picture embedded as a
base64 PNG, so the file can be mailed or opened anywhere with no network and no JavaScript.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from genforge.errors import GenforgeError
from genforge.report_style import CSS

TRAIN_SPEED_LOGS = 5  # training images/s = mean over this many of the last logs
# Log keys that are not losses: bookkeeping, VQ health, and schedule weights.
NOT_LOSSES = {"step", "time", "images_per_s", "codebook_usage", "codebook_perplexity", "dead_codes", "adv_weight", "lr"}


@dataclass
class RunSummary:
    path: Path
    name: str
    kind: str  # "gan" | "vqvae" | "prior" | "unknown"
    step: int
    wall_seconds: float | None
    parameters: dict[str, int]  # module name -> parameter count ("G", "D", "vqvae", "prior", ...)
    config: dict[str, Any]
    logs: list[dict[str, Any]] = field(default_factory=list)  # training logs, in file order
    evals: list[dict[str, Any]] = field(default_factory=list)  # {"step", **scores} during training
    evaluation: dict[str, Any] | None = None  # the latest `genforge evaluate` result
    samples: Path | None = None
    recon: Path | None = None
    problems: list[str] = field(default_factory=list)  # things skipped while reading

    @property
    def total_parameters(self) -> int | None:
        return sum(self.parameters.values()) if self.parameters else None

    @property
    def train_images_per_s(self) -> float | None:
        speeds = [r["images_per_s"] for r in self.logs if _is_number(r.get("images_per_s"))][-TRAIN_SPEED_LOGS:]
        return sum(speeds) / len(speeds) if speeds else None

    def score(self, key: str) -> float | None:
        """A final-evaluation number; a prior's test NLL also comes from its end-of-training eval."""
        if self.evaluation is not None and _is_number(self.evaluation.get(key)):
            return float(self.evaluation[key])
        if key in ("test_bits_per_dim", "test_nll_nats_per_code"):
            for record in reversed(self.evals):
                if _is_number(record.get(key)):
                    return float(record[key])
        return None


# ---------------------------------------------------------------------------------------------
# Reading a run folder


def collect(run: str | Path, data: str | None = None) -> RunSummary:
    """Read one run folder. With ``data``, only evaluations made on that data set count."""
    path = Path(run)
    if not path.exists():
        raise GenforgeError(f"{path}: no such run folder")
    if (path / "meta.json").is_file() and path.parent.name == "checkpoints":
        path = path.parent.parent  # a checkpoint folder was given: report its run
    if not path.is_dir() or not ((path / "config.yaml").is_file() or (path / "checkpoints").is_dir()):
        raise GenforgeError(f"{path}: not a genforge run folder (no config.yaml and no checkpoints/)")
    problems: list[str] = []
    config = _read_config(path / "config.yaml", problems)
    meta, tensors = _newest_checkpoint(path, problems)
    if not config and isinstance(meta.get("config"), dict):
        config = meta["config"]
    logs, evals, evaluation = _read_metrics(path / "metrics.jsonl", data, problems)
    state = meta.get("state") if isinstance(meta.get("state"), dict) else {}
    wall = state.get("elapsed")
    if not _is_number(wall):
        times = [r["time"] for r in logs + evals if _is_number(r.get("time"))]
        wall = max(times) if times else None
    step = meta.get("step")
    if not isinstance(step, int):
        steps = [r["step"] for r in logs + evals if isinstance(r.get("step"), int)]
        step = max(steps) if steps else 0
    samples_dir = path / "samples"
    grids = sorted(samples_dir.glob("step-*.png")) if samples_dir.is_dir() else []
    samples = samples_dir / "final.png" if (samples_dir / "final.png").is_file() else (grids[-1] if grids else None)
    recon = next((p for p in (path / "recon.png", samples_dir / "recon.png") if p.is_file()), None)
    return RunSummary(
        path=path,
        name=path.resolve().name,
        kind=str(meta.get("kind") or _kind_from_config(config)),
        step=step,
        wall_seconds=float(wall) if wall is not None else None,
        parameters=_count_parameters(tensors, problems) if tensors else {},
        config=config,
        logs=logs,
        evals=evals,
        evaluation=evaluation,
        samples=samples,
        recon=recon,
        problems=problems,
    )


def _read_config(path: Path, problems: list[str]) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        config = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        problems.append("config.yaml is not valid YAML")
        return {}
    return config if isinstance(config, dict) else {}


def _newest_checkpoint(run: Path, problems: list[str]) -> tuple[dict[str, Any], Path | None]:
    """(meta.json contents, tensors file) of the newest checkpoint; ({}, None) when there is none."""
    from genforge import checkpoint

    folder = checkpoint.find(run) if (run / "checkpoints").is_dir() else None
    if folder is None:
        return {}, None
    try:
        meta = json.loads((folder / checkpoint.META).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        problems.append(f"{folder.name}/meta.json is unreadable")
        meta = {}
    tensors = folder / checkpoint.TENSORS
    return (meta if isinstance(meta, dict) else {}), (tensors if tensors.is_file() else None)


def _count_parameters(tensors: Path, problems: list[str]) -> dict[str, int]:
    """Sizes of ``model.<module>.*`` tensors per module, read from the header only.

    The EMA generator is a copy of G, not extra capacity; optimizer moments and RNG state are
    not parameters. A prior's checkpoint holds the prior and the VQ-VAE that decodes its codes.
    """
    from safetensors import SafetensorError, safe_open

    counts: dict[str, int] = {}
    try:
        with safe_open(str(tensors), "np") as f:
            for key in f.keys():
                parts = key.split(".")
                if parts[0] != "model" or len(parts) < 3 or parts[1] == "G_ema":
                    continue
                counts[parts[1]] = counts.get(parts[1], 0) + math.prod(f.get_slice(key).get_shape())
    except (SafetensorError, OSError, ValueError) as e:
        problems.append(
            f"{tensors.parent.name}/{tensors.name} is unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})"
        )
        return {}
    return counts


def _kind_from_config(config: dict[str, Any]) -> str:
    if "vqvae" in config and "kind" in config:
        return "prior"
    if "discriminator" in config:
        return "vqvae"
    if {"model", "optim"} <= set(config):
        return "gan"
    return "unknown"


def _read_metrics(path: Path, data: str | None, problems: list[str]) -> tuple[list[dict], list[dict], dict | None]:
    logs: list[dict] = []
    evals: list[dict] = []
    evaluation: dict | None = None
    if not path.is_file():
        return logs, evals, evaluation
    skipped = 0
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            skipped += 1
            continue
        if not isinstance(record, dict):
            skipped += 1
        elif isinstance(record.get("evaluation"), dict):
            if data is None or record["evaluation"].get("data") == data:
                evaluation = {"step": record.get("step"), **record["evaluation"]}
        elif isinstance(record.get("eval"), dict):
            evals.append({"step": record.get("step"), "time": record.get("time"), **record["eval"]})
        elif "step" in record:
            logs.append(record)
    if skipped:
        problems.append(f"skipped {skipped} unreadable line{'s' * (skipped > 1)} of metrics.jsonl")
    return logs, evals, evaluation


# ---------------------------------------------------------------------------------------------
# The metric table and verdicts


@dataclass(frozen=True)
class Metric:
    key: str
    name: str
    unit: str
    better: str | None  # "lower" | "higher" | None (a reference, nobody "leads")
    value: Callable[[RunSummary], float | None]
    always: bool = True  # shown even when no run has it (so a missing score reads as "—")
    difference: bool = False  # compare by difference (fractions) rather than by ratio


def _class_coverage(run: RunSummary) -> float | None:
    covered, total = run.score("classes_covered"), run.score("num_classes")
    return covered / total if covered is not None and total else None


def _last_log(key: str) -> Callable[[RunSummary], float | None]:
    return lambda run: next((float(r[key]) for r in reversed(run.logs) if _is_number(r.get(key))), None)


METRICS = [
    Metric("fd", "Frechet distance", "", "lower", lambda r: r.score("fd")),
    Metric("fd_floor", "real-vs-real floor", "", None, lambda r: r.score("fd_floor"), always=False),
    Metric("kid", "KID", "", "lower", lambda r: r.score("kid")),
    Metric("precision", "precision", "", "higher", lambda r: r.score("precision"), difference=True),
    Metric("recall", "recall", "", "higher", lambda r: r.score("recall"), difference=True),
    Metric("density", "density", "", "higher", lambda r: r.score("density"), difference=True),
    Metric("coverage", "coverage", "", "higher", lambda r: r.score("coverage"), difference=True),
    Metric("class_coverage", "class coverage", "classes", "higher", _class_coverage, difference=True),
    Metric("class_kl", "class KL", "nats", "lower", lambda r: r.score("class_kl")),
    Metric("is", "Inception score", "", "higher", lambda r: r.score("is")),
    Metric(
        "test_bits_per_dim", "prior bits/dim", "bits/dim", "lower", lambda r: r.score("test_bits_per_dim"), always=False
    ),
    Metric("psnr", "reconstruction PSNR", "dB", "higher", lambda r: r.score("psnr"), always=False),
    Metric("ssim", "reconstruction SSIM", "", "higher", lambda r: r.score("ssim"), always=False, difference=True),
    Metric(
        "codebook_usage", "codebook usage", "", "higher", _last_log("codebook_usage"), always=False, difference=True
    ),
    Metric("train_images_per_s", "training images/s", "img/s", "higher", lambda r: r.train_images_per_s),
    Metric("sample_images_per_s", "sampling images/s", "img/s", "higher", lambda r: r.score("sample_images_per_s")),
    Metric(
        "wall_minutes",
        "wall time",
        "min",
        "lower",
        lambda r: r.wall_seconds / 60 if r.wall_seconds is not None else None,
    ),
    Metric("parameters", "parameters", "", "lower", lambda r: r.total_parameters),
]


def labels(runs: list[RunSummary]) -> list[str]:
    """Run names, made unique with the parent folder (then a number) where two share one."""
    names = [r.name for r in runs]
    out = [f"{r.path.resolve().parent.name}/{r.name}" if names.count(r.name) > 1 else r.name for r in runs]
    return [f"{label} #{i + 1}" if out.count(label) > 1 else label for i, label in enumerate(out)]


def metric_table(runs: list[RunSummary]) -> list[dict[str, Any]]:
    """One row per metric: metric, key, unit, better, values (one per run, None if missing),
    display (formatted strings, "—" if missing) and leader (a run label, or None)."""
    names = labels(runs)
    rows = []
    for m in METRICS:
        values = [m.value(run) for run in runs]
        if not m.always and all(v is None for v in values):
            continue
        leader = _leader(values, m.better)
        rows.append(
            {
                "metric": m.name,
                "key": m.key,
                "unit": m.unit,
                "better": m.better,
                "values": values,
                "display": [_display(m.key, run, v) for run, v in zip(runs, values)],
                "leader": names[leader] if leader is not None else None,
                "leader_index": leader,
            }
        )
    return rows


def _leader(values: list[float | None], better: str | None) -> int | None:
    """Index of the best value; None with fewer than two values, no direction, or a tie."""
    present = [(v, i) for i, v in enumerate(values) if v is not None and math.isfinite(v)]
    if better is None or len(present) < 2:
        return None
    ranked = sorted(present, reverse=better == "higher")
    return None if ranked[0][0] == ranked[1][0] else ranked[0][1]


def verdicts(runs: list[RunSummary]) -> list[str]:
    """ "Frechet distance: gan leads (12.3 vs 45.6, 3.7x lower)", one per metric with a leader."""
    out = []
    specs = {m.key: m for m in METRICS}
    for row in metric_table(runs):
        i = row["leader_index"]
        if i is None:
            continue
        others = [(v, j) for j, v in enumerate(row["values"]) if j != i and v is not None and math.isfinite(v)]
        best_other, j = sorted(others, reverse=row["better"] == "higher")[0]
        lead = row["values"][i]
        if specs[row["key"]].difference or lead <= 0 or best_other <= 0:
            margin = f"{_number(abs(lead - best_other))} {row['better']}"
        else:
            margin = f"{max(lead, best_other) / min(lead, best_other):.1f}x {row['better']}"
        shown = [_display(row["key"], runs[k], row["values"][k], brief=True) for k in (i, j)]
        versus = shown[1] if len(runs) == 2 else f"{shown[1]} for {labels(runs)[j]}"
        out.append(f"{row['metric']}: {row['leader']} leads ({shown[0]} vs {versus}, {margin})")
    return out


def notes(runs: list[RunSummary]) -> list[str]:
    """Caveats a reader needs before trusting the table."""
    out = []
    names = labels(runs)
    for name, run in zip(names, runs):
        if run.evaluation is None:
            out.append(f"{name}: no evaluation yet; run `genforge evaluate {run.path}` for scores")
        elif run.evaluation.get("collapsed"):
            out.append(f"{name}: the evaluation flags mode collapse (samples miss whole classes)")
        out.extend(f"{name}: {problem}" for problem in run.problems)
    evaluated = [r.evaluation for r in runs if r.evaluation is not None]
    for key, what in (("features", "feature networks"), ("data", "data sets"), ("n", "sample counts")):
        seen = sorted({str(e[key]) for e in evaluated if key in e})
        if len(seen) > 1:
            out.append(f"evaluations use different {what} ({', '.join(seen)}): scores are not directly comparable")
    return out


# ---------------------------------------------------------------------------------------------
# Formatting


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def _count(n: float) -> str:
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.3g}{suffix}"
    return f"{n:.0f}"


def _display(key: str, run: RunSummary, value: float | None, brief: bool = False) -> str:
    if value is None:
        return "—"
    if key == "class_coverage":
        return f"{run.score('classes_covered'):.0f}/{run.score('num_classes'):.0f}"
    if key == "kid" and run.score("kid_std") is not None and not brief:
        return f"{_number(value)} ± {_number(run.score('kid_std'))}"
    if key == "parameters":
        return _count(value)
    if key in ("train_images_per_s", "sample_images_per_s") and value >= 100:
        return f"{value:,.0f}"
    if key == "wall_minutes":
        return f"{value:,.1f}"
    return _number(value)


# ---------------------------------------------------------------------------------------------
# Pictures


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def curves_png(run: RunSummary) -> bytes | None:
    """Losses vs step, and a second panel with codebook usage (VQ-VAE) or eval FD when logged."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    losses: dict[str, tuple[list[int], list[float]]] = {}
    for record in run.logs:
        for key, value in record.items():
            if (
                key not in NOT_LOSSES
                and _is_number(value)
                and math.isfinite(value)
                and isinstance(record.get("step"), int)
            ):
                steps, values = losses.setdefault(key, ([], []))
                steps.append(record["step"])
                values.append(float(value))
    second = None
    usage = [
        (r["step"], r["codebook_usage"])
        for r in run.logs
        if _is_number(r.get("codebook_usage")) and isinstance(r.get("step"), int)
    ]
    fds = [(r["step"], r["fd"]) for r in run.evals if _is_number(r.get("fd")) and isinstance(r.get("step"), int)]
    if run.kind == "vqvae" and usage:
        second = ("codebook usage", usage)
    elif len(fds) > 1:
        second = ("Frechet distance (during training)", fds)
    if not losses and second is None:
        return None
    panels = int(bool(losses)) + int(second is not None)
    fig = Figure(figsize=(3.2 * panels, 2.4), dpi=100)
    FigureCanvasAgg(fig)
    index = 1
    if losses:
        ax = fig.add_subplot(1, panels, index)
        for key, (steps, values) in list(losses.items())[:8]:
            ax.plot(steps, values, label=key, linewidth=1.2)
        ax.set_title("losses", fontsize=9)
        ax.legend(fontsize=7, frameon=False)
        index += 1
    if second is not None:
        ax = fig.add_subplot(1, panels, index)
        title, points = second
        points = sorted(points)  # a resumed run may have logged a step twice
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            color="tab:purple",
            linewidth=1.2,
            marker="." if len(points) < 30 else None,
        )
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
    out = Path(out)
    document = render(runs, title)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(document)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a report is meant to be shared
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def render(runs: list[RunSummary], title: str = "genforge report") -> str:
    names = labels(runs)
    esc = html.escape
    when = datetime.now().strftime("%Y-%m-%d %H:%M")
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>",
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
    breakdown = ", ".join(f"{k} {_count(v)}" for k, v in run.parameters.items())
    facts = {
        "steps": f"{run.step:,}",
        "wall time": f"{run.wall_seconds / 60:.1f} min" if run.wall_seconds is not None else "—",
        "parameters": f"{_count(params)} ({breakdown})" if params is not None else "—",
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
    caption = "originals and reconstructions, in pairs" if run.kind == "vqvae" else "samples"
    out.append(_image(run.samples, f"{caption} ({run.samples.name})" if run.samples else caption, "grid"))
    if run.recon is not None:
        out.append(_image(run.recon, f"reconstructions ({run.recon.name})", "grid"))
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
    if run.kind == "prior" and run.config.get("vqvae"):
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
