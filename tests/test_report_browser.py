"""The report in a real browser: every picture decodes and the metric table shows the runs' numbers.

Headless Chromium opens a copy of the report with two additions: a Content-Security-Policy
that allows pictures only from data: URIs (so a picture the report fails to embed fails to
load, and nothing is fetched), and a script that writes what the page shows once it has
loaded into the DOM, which ``--dump-dom`` prints. Skipped when Chromium is missing, unless
GENFORGE_REQUIRE_BROWSER is set (CI sets it: there a missing browser is a failure).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from genforge.report import collect, write_report

CHROMIUM = "/usr/bin/chromium"
REQUIRE = "GENFORGE_REQUIRE_BROWSER"
# Numbers chosen so that any sane formatting shows them as written.
EVALUATIONS = {
    "gan": {"fd": 12.5, "recall": 0.375, "precision": 0.8125, "features": "classifier", "n": 500, "data": "toy"},
    "vq": {
        "fd": 45.5,
        "recall": 0.625,
        "precision": 0.6875,
        "psnr": 24.5,
        "features": "classifier",
        "n": 500,
        "data": "toy",
    },
}
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"
PROBE = """<img id="probe-broken" alt="" src="data:image/png;base64,iVBORw0KGgoAAAAN">
<script>
window.addEventListener("load", () => {
  const seen = {
    images: [...document.images].map(i => ({id: i.id, alt: i.alt, complete: i.complete, width: i.naturalWidth})),
    header: [...document.querySelectorAll("table thead th")].map(c => c.textContent.trim()),
    rows: [...document.querySelectorAll("table tbody tr")].map(r => [...r.cells].map(c => c.textContent.trim())),
  };
  const out = document.createElement("pre");
  out.id = "probe-result";
  out.textContent = JSON.stringify(seen);
  document.body.appendChild(out);
});
</script>
"""


def chromium(path: str = CHROMIUM) -> str:
    found = path if Path(path).exists() else shutil.which("chromium")
    if found is None:
        if os.environ.get(REQUIRE):
            pytest.fail(f"{REQUIRE} is set but Chromium is missing: run scripts/ensure-chromium.sh")
        pytest.skip("chromium is not installed (scripts/ensure-chromium.sh installs it)")
    return found


def make_run(root: Path, name: str, config: dict, evaluation: dict, logs: dict) -> Path:
    run = root / name
    (run / "samples").mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    records = [
        {"step": s, "time": s * 0.5, "images_per_s": 800.0 + s, **{k: v / s for k, v in logs.items()}}
        for s in (50, 100, 150)
    ]
    records.append({"step": 150, "time": 75.0, "eval": {"fd": evaluation["fd"] * 2}})
    records.append({"step": 150, "evaluation": evaluation})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    pixels = np.random.default_rng(len(name)).integers(0, 256, (24, 40), dtype=np.uint8)
    Image.fromarray(pixels).save(run / "samples" / "final.png")
    return run


def probe(page: Path, tmp_path: Path) -> dict:
    """Open ``page`` with the CSP and the probe script; return what the script saw."""
    text = page.read_text(encoding="utf-8")
    assert text.count("<head>") == 1 and text.count("</body>") == 1
    text = text.replace("<head>", f'<head><meta http-equiv="Content-Security-Policy" content="{CSP}">', 1)
    probed = tmp_path / "probed.html"
    probed.write_text(text.replace("</body>", PROBE + "</body>", 1), encoding="utf-8")
    command = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",  # virtual time: the load event fires without waiting in real time
        "--dump-dom",
        probed.as_uri(),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    found = re.search(r'<pre id="probe-result">(.*?)</pre>', done.stdout, re.S)
    assert found, f"no probe result (exit {done.returncode}): {done.stderr.strip()[-500:]}"
    return json.loads(html.unescape(found.group(1)))


def test_report_renders_in_chromium(tmp_path):
    chromium()  # skip (or fail) before building anything
    gan = make_run(
        tmp_path,
        "gan",
        {"data": {"source": "toy"}, "model": {"z_dim": 8}, "optim": {"lr_g": 2e-4}, "train": {"seed": 0}},
        EVALUATIONS["gan"],
        {"d_loss": 60.0, "g_loss": 90.0},
    )
    vq = make_run(
        tmp_path,
        "vq",
        {"data": {"source": "toy"}, "model": {}, "discriminator": {}, "optim": {}, "train": {}},
        EVALUATIONS["vq"],
        {"loss": 30.0, "recon": 20.0},
    )
    Image.fromarray(np.full((16, 32, 3), 200, np.uint8)).save(vq / "recon.png")
    page = write_report([collect(gan), collect(vq)], tmp_path / "report.html")

    seen = probe(page, tmp_path)

    probe_image = next(i for i in seen["images"] if i["id"] == "probe-broken")
    assert probe_image["width"] == 0  # the check can fail: a broken picture is seen as broken
    pictures = [i for i in seen["images"] if i["id"] != "probe-broken"]
    assert len(pictures) == page.read_text().count("<img") >= 3  # two sample grids and a reconstruction, at least
    assert all(i["complete"] and i["width"] > 0 for i in pictures), pictures

    assert seen["header"][1:] == ["gan", "vq"]
    values = [row[1:] for row in seen["rows"]]
    for key in ("fd", "recall", "precision"):
        assert [f"{EVALUATIONS['gan'][key]:g}", f"{EVALUATIONS['vq'][key]:g}"] in values, key
    assert ["—", "24.5"] in values  # PSNR: the VQ-VAE's only


def test_missing_browser_skips_unless_required(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv(REQUIRE, raising=False)
    with pytest.raises(pytest.skip.Exception):
        chromium("/nonexistent/chromium")
    monkeypatch.setenv(REQUIRE, "1")
    with pytest.raises(pytest.fail.Exception, match="Chromium is missing"):
        chromium("/nonexistent/chromium")
