"""Run folders written by genforge 0.1 still load: their configs used other words (`g_channels`,
the VQ-VAE's `in_channels` and `channels`, the quantizer's and the prior's `kind`) and their
metrics.jsonl had three line shapes. They sample, evaluate, report and resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from genforge import checkpoint as ckpt
from genforge.report import collect, metric_table
from genforge.runfolder import read_records
from synthetic import COMMON, TINY_PRIOR, cli, install_evaluator, is_png, sets, train, write_idx_folder


def as_version_0_1(run: Path, rename) -> None:
    """Rewrite every checkpoint's config (and config.yaml) with genforge 0.1's words, and
    metrics.jsonl with its line shapes."""
    for folder in (run / "checkpoints").glob("step-*"):
        meta = json.loads((folder / ckpt.META).read_text())
        meta["config"] = rename(meta["config"])
        meta["state"].pop("precision", None)  # 0.1 stored no precision choice
        if "vqvae_config" in meta["state"].get("extra", {}):
            meta["state"]["extra"]["vqvae_config"] = vqvae_0_1(meta["state"]["extra"]["vqvae_config"])
        (folder / ckpt.META).write_text(json.dumps(meta))
    lines = []
    for r in read_records(run):
        if r["type"] == "train":
            lines.append({"step": r["step"], "time": r.get("time", 0.0), **r["values"]})
        else:
            lines.append({"step": r["step"], r["type"]: r["values"]})
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    (run / "config.yaml").unlink()


def gan_0_1(config: dict) -> dict:
    model = dict(config["model"])
    for new, old in (("g_width", "g_channels"), ("d_width", "d_channels"), ("max_width", "max_channels")):
        model[old] = model.pop(new)
    for added in ("num_classes", "class_dim"):
        model.pop(added)
    config = {k: v for k, v in config.items() if k not in ("conditional", "augment")}
    optim = {k: v for k, v in config["optim"].items() if k != "r1_interval"}
    return {**config, "model": model, "optim": optim}


def vqvae_0_1(config: dict) -> dict:
    model = dict(config["model"])
    model["in_channels"], model["channels"] = model.pop("channels"), model.pop("width")
    model["max_channels"] = model.pop("max_width")
    quantizer = dict(model["quantizer"])
    quantizer["kind"] = quantizer.pop("method")
    model["quantizer"] = quantizer
    disc = dict(config["discriminator"])
    disc["in_channels"], disc["channels"] = disc.pop("channels"), disc.pop("width")
    return {**config, "model": model, "discriminator": disc}


def prior_0_1(config: dict) -> dict:
    config = dict(config)
    config["kind"] = config.pop("network")
    config["model"] = {k: v for k, v in config["model"].items() if k != "attn_dropout"}
    config["optim"] = {k: v for k, v in config["optim"].items() if k not in ("lr_schedule", "lr_final_ratio")}
    return config


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("legacy")
    data = write_idx_folder(root / "idx")
    cache = root / "cache"
    install_evaluator(cache, str(data))
    runs = {
        "gan": train("gan", root / "gan", data=data, steps=4),
        "vqvae": train("vqvae", root / "vq", data=data, steps=4),
    }
    runs["prior"] = train("prior", root / "prior", vqvae=runs["vqvae"], steps=4)
    as_version_0_1(runs["gan"], gan_0_1)
    as_version_0_1(runs["vqvae"], vqvae_0_1)
    as_version_0_1(runs["prior"], prior_0_1)
    return {"root": root, "data": data, "cache": cache, **runs}


def test_old_lines_of_metrics_are_read_as_records(world):
    types = {r["type"] for r in read_records(world["prior"])}
    assert types == {"train", "eval"}
    assert json.loads((world["gan"] / "metrics.jsonl").read_text().splitlines()[0]).keys() >= {"step", "d_loss"}


@pytest.mark.parametrize("name", ["gan", "prior"])
def test_old_runs_sample(world, tmp_path, name):
    code, _, err = cli("sample", world[name], "--n", 4, "--out", tmp_path / "s.png", "--device", "cpu")
    assert code == 0 and is_png(tmp_path / "s.png"), err


def test_old_vqvae_reconstructs_and_old_runs_are_reported(world, tmp_path):
    code, _, err = cli("reconstruct", world["vqvae"], "--out", tmp_path / "r.png", "--device", "cpu")
    assert code == 0, err
    summaries = [collect(world[name]) for name in ("gan", "vqvae", "prior")]
    assert [s.kind for s in summaries] == ["gan", "vqvae", "prior"]
    rows = {row["key"]: row for row in metric_table(summaries)}
    assert rows["code_nll"]["values"][2] is not None  # the prior's held-out NLL, under its new name


def test_old_runs_evaluate(world, monkeypatch):
    monkeypatch.setenv("GENFORGE_CACHE", str(world["cache"]))
    for name in ("gan", "vqvae", "prior"):
        code, out, err = cli("evaluate", world[name], "--n", 64, "--device", "cpu", "--json", "--no-record")
        assert code == 0, err


def test_old_runs_resume(world):
    for name, extra in (("gan", []), ("vqvae", [])):
        out = train(name, world[name], data=world["data"], steps=6, extra=extra)
        assert ckpt.load(out).step == 6
    # 0.1's prior dropped attention weights at its dropout rate: resuming says so, the same value resumes
    code, _, err = cli("train", "prior", "--vqvae", world["vqvae"], "--out", world["prior"], "--steps", 6, "--device",
                       "cpu", "--quiet", *sets(COMMON, TINY_PRIOR))  # fmt: skip
    assert code == 2 and "model.attn_dropout=0.1" in err
    out = train("prior", world["prior"], vqvae=world["vqvae"], steps=6, extra=["model.attn_dropout=0.1"])
    assert ckpt.load(out).step == 6
