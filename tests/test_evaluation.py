"""`genforge evaluate` / `evaluator` end to end with a tiny cached classifier: what each kind of run
reports, recording into metrics.jsonl, plain image sets, the clear errors, in-training evaluation."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from genforge.config import DataConfig
from genforge.metrics.extractors import reference_images
from synthetic import cli, install_evaluator, one_error, records, train, write_idx_folder, write_npz

GENERATOR_KEYS = {"fd", "kid", "precision", "recall", "density", "coverage", "classes_covered", "sample_images_per_s"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Labelled .npz data and data with a test split, their tiny evaluators, and one run of each kind."""
    root = tmp_path_factory.mktemp("eval")
    npz, idx, cache = write_npz(root / "bars.npz"), write_idx_folder(root / "bars"), root / "cache"
    install_evaluator(cache, str(npz))
    install_evaluator(cache, str(idx))
    vq = train("vqvae", root / "vq", data=idx, steps=6)
    return {
        "root": root,
        "npz": npz,
        "idx": idx,
        "cache": cache,
        "vq": vq,
        "gan": train("gan", root / "gan", data=npz, steps=4),
        "prior": train("prior", root / "prior", vqvae=vq, steps=4),
    }


@pytest.fixture(autouse=True)
def cache(world, monkeypatch):
    monkeypatch.setenv("GENFORGE_CACHE", str(world["cache"]))
    return world["cache"]


def evaluate_json(*args) -> dict:
    code, out, err = cli("evaluate", *args, "--json", "--device", "cpu")
    assert code == 0, err
    return json.loads(out)


def test_gan_run_scores_and_record(world):
    before = len(records(world["gan"]))
    scores = evaluate_json(world["gan"], "--n", 64)
    assert GENERATOR_KEYS <= set(scores)
    assert all(math.isfinite(scores[k]) for k in GENERATOR_KEYS)
    assert 0 <= scores["precision"] <= 1 and 0 <= scores["coverage"] <= 1 and scores["fd"] >= 0
    assert (scores["kind"], scores["n"], scores["data"]) == ("gan", 64, str(world["npz"]))
    lines = records(world["gan"])
    assert len(lines) == before + 1
    assert lines[-1] == {"type": "evaluation", "step": 4, "values": scores}


def test_the_printed_table_gives_fd_and_kid_their_counts(world):
    code, out, err = cli("evaluate", world["gan"], "--n", 64, "--no-record", "--device", "cpu")
    assert code == 0, err
    lines = {line.split(":")[0].strip(): line.split(":", 1)[1].strip() for line in out.splitlines()}
    # 256 labelled images: evaluate's reference is 205 of them (one in five is tune's)
    assert "fd (n=64 vs 205 real)" in lines and "kid (n=64 vs 205 real)" in lines
    assert lines["n"] == "64" and lines["reference_n"] == "205" and lines["features"] == "classifier"
    assert "features: classifier (the data has labels" in err


def test_no_record_leaves_metrics_alone(world):
    before = (world["gan"] / "metrics.jsonl").read_bytes()
    evaluate_json(world["gan"], "--n", 64, "--no-record")
    assert (world["gan"] / "metrics.jsonl").read_bytes() == before


def test_vqvae_run_scores_reconstructions_and_codebook(world):
    scores = evaluate_json(world["vq"], "--n", 64)
    assert scores["kind"] == "vqvae" and scores["n"] == 64  # the whole test split
    assert {"mse", "psnr", "ssim", "codebook_usage", "codebook_perplexity", "recon_fd"} <= set(scores)
    assert 0 < scores["mse"] < 1 and scores["psnr"] > 0 and -1 <= scores["ssim"] <= 1
    assert 0 < scores["codebook_usage"] <= 1
    assert records(world["vq"])[-1]["values"] == scores


def test_prior_run_scores_samples_and_reports_its_test_nll(world):
    scores = evaluate_json(world["prior"], "--n", 64)
    assert GENERATOR_KEYS <= set(scores) and scores["kind"] == "prior"
    trained = records(world["prior"], "eval")[-1]["values"]
    assert scores["code_nll"] == trained["code_nll"]
    assert scores["code_bits_per_dim"] == trained["code_bits_per_dim"]


@pytest.mark.parametrize("fmt", ["npz", "png-dir"])
def test_images_from_any_tool(world, tmp_path, fmt):
    images = tmp_path / ("fake.npz" if fmt == "npz" else "fake")
    code, _, err = cli("sample", world["gan"], "--n", 40, "--out", images, "--format", fmt, "--device", "cpu")
    assert code == 0, err
    scores = evaluate_json(images, "--data", world["npz"], "--n", 64)
    assert {"fd", "kid", "precision", "recall", "coverage"} <= set(scores)
    assert scores["n"] == 40 and scores["data"] == str(world["npz"])


def test_images_without_data_is_an_error(world, tmp_path):
    images = write_npz(tmp_path / "fake.npz", n=16, labelled=False)
    code, _, err = cli("evaluate", images, "--device", "cpu")
    assert code == 2 and "needs --data" in one_error(err)


def test_real_vs_real_without_a_test_split_compares_two_halves(world):
    scores = evaluate_json("--real-vs-real", "--data", world["npz"], "--n", 64)
    assert scores["kind"] == "real-vs-real" and scores["n"] == 64  # 64 of the second half vs 64 of the first
    assert scores["fd"] >= 0 and scores["classes_covered"] == scores["num_classes"]


def test_the_single_split_floor_halves_share_no_image(world):
    """The floor's reference is the first half of evaluate's images, its held-out set the second."""
    cfg = DataConfig(source=str(world["npz"]))
    everything, indices, _, _ = reference_images(cfg, n=0)
    first, first_indices, _, _ = reference_images(cfg, n=64)
    assert np.array_equal(first.images, everything.images[:64])
    assert set(first_indices).isdisjoint(indices[64:128]) and len(set(indices[:128])) == 128


def test_real_vs_real_on_data_with_a_test_split(world):
    scores = evaluate_json("--real-vs-real", "--data", world["idx"], "--n", 64)
    assert scores["kind"] == "real-vs-real" and scores["n"] == 64
    assert scores["fd"] >= 0 and scores["classes_covered"] == scores["num_classes"]


def test_real_vs_real_without_data(world):
    code, _, err = cli("evaluate", "--real-vs-real", "--device", "cpu")
    assert code == 2 and "--real-vs-real needs --data" in one_error(err)


def test_classifier_features_asked_for_need_labels(world, tmp_path):
    unlabelled = write_npz(tmp_path / "unlabelled.npz", n=32, labelled=False)
    args = ("evaluate", unlabelled, "--data", unlabelled, "--n", 16, "--features", "classifier", "--device", "cpu")
    code, _, err = cli(*args)
    assert code == 2
    message = one_error(err)
    assert "needs class labels" in message and "--features inception" in message


def test_evaluator_train_prints_accuracy(tmp_path, monkeypatch):
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))  # nothing cached: it trains
    data = write_npz(tmp_path / "d.npz", n=200)
    code, out, err = cli("evaluator", "train", "--data", data, "--epochs", 1, "--device", "cpu")
    assert code == 0, err
    summary = out.strip().splitlines()[-1]
    assert summary.startswith(f"classifier for {data}: test accuracy ")
    assert 0 <= float(summary.rsplit(" ", 1)[1]) <= 1
    assert len(list((tmp_path / "cache" / "evaluators").glob("*/classifier.safetensors"))) == 1


def test_a_retrained_evaluator_does_not_reuse_stale_real_statistics(world, tmp_path, monkeypatch):
    """The cached real statistics are features of one classifier; new weights need new statistics."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("GENFORGE_CACHE", str(cache))
    install_evaluator(cache, str(world["npz"]))
    evaluate_json(world["gan"], "--n", 64, "--no-record")  # caches the real statistics
    shutil.rmtree(cache / "evaluators")  # e.g. to retrain it: same dataset key, other weights
    install_evaluator(cache, str(world["npz"]), seed=1)
    after_retraining = evaluate_json(world["gan"], "--n", 64, "--no-record")
    shutil.rmtree(cache / "reference")
    from_scratch = evaluate_json(world["gan"], "--n", 64, "--no-record")
    after_retraining.pop("sample_images_per_s"), from_scratch.pop("sample_images_per_s")
    assert after_retraining == from_scratch


def test_evaluation_during_training(world, tmp_path):
    out = train(
        "gan", tmp_path / "gan", data=world["npz"], steps=10, extra=["train.eval_every=5", "train.eval_samples=64"]
    )
    evals = records(out, "eval")
    assert [r["step"] for r in evals] == [5, 10]
    for r in evals:
        assert {"fd", "precision", "recall", "coverage", "classes_covered"} <= set(r["values"])
        assert r["values"]["fd"] >= 0 and isinstance(r["time"], float)
