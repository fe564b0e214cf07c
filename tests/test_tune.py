"""`genforge tune`: sampling settings chosen by measurement, kept in the run's sampling.json, and used
by `sample` and `evaluate` unless options are given (or --untuned): a prior's decoding options, a
GAN's truncation."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from genforge import checkpoint as ckpt
from genforge import families
from genforge.families.sampling import best, read_sampling, write_sampling
from genforge.metrics.extractors import reference_images, reference_indices
from genforge.runfolder import SAMPLING
from synthetic import cli, install_evaluator, one_error, train, write_idx_folder


def test_best_is_the_argmin_and_ties_go_to_recall_and_coverage():
    a = {"options": {"t": 1}, "fd": 5.0, "recall": 0.9, "coverage": 0.9}
    b = {"options": {"t": 2}, "fd": 3.0, "recall": 0.1, "coverage": 0.1}
    c = {"options": {"t": 3}, "fd": 3.02, "recall": 0.5, "coverage": 0.5}  # within 1% of b: a tie
    d = {"options": {"t": 4}, "fd": 3.5, "recall": 1.0, "coverage": 1.0}
    assert best([a, b, d]) is b
    assert best([a, b, c, d]) is c
    assert best([dict(b), dict(b)])["options"] == b["options"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("tune")
    data = write_idx_folder(root / "bars")
    install_evaluator(root / "cache", str(data))
    vq = train("vqvae", root / "vq", data=data, steps=10)
    return {
        "root": root,
        "ar": train("prior", root / "ar", vqvae=vq, steps=6),
        "maskgit": train("prior", root / "mg", vqvae=vq, steps=4, options=["--network", "maskgit"]),
        "cgan": train("gan", root / "cgan", data=data, steps=4, options=["--preset", "conditional"]),
    }


@pytest.fixture(autouse=True)
def cache(world, monkeypatch):
    monkeypatch.setenv("GENFORGE_CACHE", str(world["root"] / "cache"))


def test_tune_writes_every_candidate_and_chooses_the_best(world):
    run = world["ar"]
    code, out, err = cli("tune", run, "--n", 24, "--quiet", "--device", "cpu")
    assert code == 0, err
    result = read_sampling(run)
    assert (result["step"], result["n"], result["features"]) == (6, 24, "classifier")
    candidates = result["candidates"]
    # a coordinate search from the defaults: guidance (conditional data), temperature, top-k (16 codes), top-p
    assert set(candidates[0]["options"]) == {"cfg_scale", "temperature", "top_k", "top_p"}
    assert candidates[0]["options"] == {"cfg_scale": 1.0, "temperature": 1.0, "top_k": None, "top_p": None}
    assert result["default"] == {k: v for k, v in candidates[0].items() if k != "options"}
    assert len(candidates) == 1 + 4 + 4 + 4 + 4  # each option's values, the current point scored once
    assert len({json.dumps(c["options"], sort_keys=True) for c in candidates}) == len(candidates)
    assert all({"fd", "recall", "coverage", "precision", "seconds"} <= set(c) for c in candidates)
    assert result["chosen"] == best(candidates)["options"]
    assert result["scores"]["fd"] <= 1.01 * min(c["fd"] for c in candidates)
    assert "| chosen" in out and f"wrote {run / SAMPLING}" in out


def test_maskgit_tunes_its_decoding_steps(world):
    run = world["maskgit"]
    code, _, err = cli("tune", run, "--n", 16, "--quiet", "--device", "cpu")
    assert code == 0, err
    options = read_sampling(run)["candidates"][0]["options"]
    assert set(options) == {"cfg_scale", "temperature", "top_k", "steps"} and options["steps"] == 8


def _greedy(run, step=6) -> None:
    """A hand-written sampling.json choosing greedy decoding: samples stop depending on the seed."""
    chosen = {"temperature": 0.0, "top_k": None, "top_p": None, "cfg_scale": 1.0}
    write_sampling(run, {"step": step, "chosen": chosen, "candidates": [], "n": 0})


def _sample(run, path, *args):
    code, out, err = cli("sample", run, "--n", 4, "--class", 1, "--out", path, "--device", "cpu", *args)
    assert code == 0, err
    return np.asarray(Image.open(path)), out


def test_sample_uses_the_tuned_settings_unless_overridden(world, tmp_path):
    run = world["ar"]
    _greedy(run)
    a, out = _sample(run, tmp_path / "a.png", "--seed", 1)
    b, _ = _sample(run, tmp_path / "b.png", "--seed", 2)
    assert np.array_equal(a, b)  # greedy: the seed no longer matters
    assert f"sampling: temperature 0.0, cfg_scale 1.0 (from {run / SAMPLING}, tuned at step 6)" in out
    c, out = _sample(run, tmp_path / "c.png", "--seed", 1, "--temperature", 1.0)
    d, _ = _sample(run, tmp_path / "d.png", "--seed", 2, "--temperature", 1.0)
    assert not np.array_equal(c, d)  # an explicit option overrides the file
    assert "temperature 1.0" in out and "temperature given explicitly" in out
    e, out = _sample(run, tmp_path / "e.png", "--seed", 1, "--untuned")
    assert not np.array_equal(e, a) and f"the run's {SAMPLING} ignored" in out


def test_evaluate_names_the_settings_it_sampled_with(world):
    run = world["ar"]
    _greedy(run)
    code, out, err = cli("evaluate", run, "--n", 16, "--json", "--device", "cpu", "--no-record")
    assert code == 0, err
    assert json.loads(out)["sampling"].startswith("sampling: temperature 0.0")


def test_a_broken_sampling_file_is_one_clear_error(world, tmp_path):
    run = world["maskgit"]
    write_sampling(run, {"step": 4, "chosen": {"top_p": 0.9}, "candidates": []})  # top_p: an AR option
    code, _, err = cli("sample", run, "--n", 2, "--out", tmp_path / "x.png", "--device", "cpu")
    assert code == 2
    assert "sampling.json: sampling option 'top_p' does not apply to maskgit priors" in one_error(err)
    (run / SAMPLING).write_text("{")
    code, _, err = cli("sample", run, "--n", 2, "--out", tmp_path / "x.png", "--device", "cpu")
    assert code == 2 and "sampling.json: unreadable" in one_error(err)
    (run / SAMPLING).unlink()


def test_tune_refuses_a_vqvae(world):
    code, _, err = cli("tune", world["root"] / "vq", "--n", 4, "--quiet", "--device", "cpu")
    assert code == 2 and "has no sampling settings to tune" in one_error(err)


def test_a_gan_tunes_its_truncation(world):
    run = world["cgan"]
    code, out, err = cli("tune", run, "--n", 24, "--quiet", "--device", "cpu")
    assert code == 0, err
    result = read_sampling(run)
    candidates = result["candidates"]
    assert [c["options"] for c in candidates] == [{"truncation": t} for t in (None, 2.0, 1.5, 1.0, 0.5)]
    assert len({c["fd"] for c in candidates}) == len(candidates)  # each setting draws different images
    assert all(0 <= c["class_accuracy_min"] <= c["class_accuracy"] <= 1 for c in candidates)  # conditional
    assert result["chosen"] == best(candidates)["options"]
    assert "| chosen" in out and "truncation" in out


def _gan_sample(run, path, *args):
    code, out, err = cli("sample", run, "--n", 8, "--class", 1, "--format", "npz", "--out", path, "--device", "cpu",
                         *args)  # fmt: skip
    assert code == 0, err
    with np.load(path) as f:
        return f["images"], out


def test_gan_samples_with_the_tuned_truncation_unless_told_otherwise(world, tmp_path):
    run = world["cgan"]
    write_sampling(run, {"step": 4, "chosen": {"truncation": 0.5}, "candidates": []})
    tuned, out = _gan_sample(run, tmp_path / "a.npz", "--seed", 3)
    assert f"sampling: truncation 0.5 (from {run / SAMPLING}, tuned at step 4)" in out
    asked, _ = _gan_sample(run, tmp_path / "b.npz", "--seed", 3, "--truncation", 0.5, "--untuned")
    assert np.array_equal(tuned, asked)  # the file's truncation is exactly the one asked for
    plain, out = _gan_sample(run, tmp_path / "c.npz", "--seed", 3, "--untuned")
    assert not np.array_equal(plain, tuned) and f"the run's {SAMPLING} ignored" in out
    other, out = _gan_sample(run, tmp_path / "d.npz", "--seed", 3, "--truncation", 1.5)
    assert not np.array_equal(other, tuned) and "truncation given explicitly" in out
    code, out, err = cli("evaluate", run, "--n", 16, "--json", "--device", "cpu", "--no-record")
    assert code == 0, err
    assert json.loads(out)["sampling"].startswith("sampling: truncation 0.5 (from")
    (run / SAMPLING).unlink()


@pytest.mark.parametrize(
    ("chosen", "words"),
    [
        ({"temperature": 0.9}, "sampling option 'temperature' does not apply to a GAN"),
        ({"truncation": -1.0}, "truncation must be a positive number, got -1.0"),
    ],
)
def test_a_gan_refuses_a_sampling_file_it_cannot_use(world, tmp_path, chosen, words):
    run = world["cgan"]
    write_sampling(run, {"step": 4, "chosen": chosen, "candidates": []})
    code, _, err = cli("sample", run, "--n", 2, "--out", tmp_path / "x.png", "--device", "cpu")
    assert code == 2 and f"sampling.json: {words}" in one_error(err)
    (run / SAMPLING).unlink()


def test_use_sets_the_options_of_later_draws_and_says_so(world):
    _, model = families.load(world["cgan"], torch.device("cpu"))
    model.use({"truncation": 1.0})
    assert model.sampling_note() == f"sampling: truncation 1.0 (set by the caller, not read from {SAMPLING})"
    a = model.sample(6, torch.Generator().manual_seed(2), class_label=1)
    b = model.sample(6, torch.Generator().manual_seed(2), class_label=1, truncation=1.0, tuned=False)
    c = model.sample(6, torch.Generator().manual_seed(2), class_label=1, tuned=False)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not (world["cgan"] / SAMPLING).exists()  # the file is not touched


def test_tune_scores_against_training_images_evaluate_never_reports_on(world):
    """tune's reference and evaluate's share no image: by index, and by the images' own bytes."""
    run = world["ar"]
    code, out, err = cli("tune", run, "--n", 8, "--device", "cpu")
    assert code == 0, err
    data_cfg = families.get("prior").data_config(ckpt.load(run, kind="prior"))
    tuned_on, tuned_indices, n_train, _ = reference_images(data_cfg, purpose="tune")
    reported_on, reported_indices, _, _ = reference_images(data_cfg, purpose="evaluate")
    # 256 training images: tune one in five (51, from the fifth), evaluate the other 205
    assert n_train == 256 and list(tuned_indices) == list(range(4, 256, 5))
    assert len(reported_indices) == 205 and set(tuned_indices).isdisjoint(reported_indices)
    recorded = read_sampling(run)["reference"]
    assert {k: recorded[k] for k in ("split", "start", "stop", "step", "count", "of")} == {
        "split": "train",
        "start": 4,
        "stop": 256,
        "step": 5,
        "count": 51,
        "of": 256,
    }
    hashes = [{hashlib.sha256(image.tobytes()).hexdigest() for image in d.images} for d in (tuned_on, reported_on)]
    assert len(hashes[0]) == 51 and len(hashes[1]) == 205 and hashes[0].isdisjoint(hashes[1])
    assert "tuning against 51 of the 256 training images (one in 5 from image 4; evaluate reports on others" in err
    assert recorded["said"] in err
    code, out, err = cli("evaluate", run, "--n", 16, "--json", "--device", "cpu", "--no-record")
    assert code == 0, err
    assert json.loads(out)["reference_n"] == 205
    (run / SAMPLING).unlink()


def test_reference_indices_of_fashion_mnist_and_emoji_sizes():
    evaluate, tune = reference_indices(60_000)  # Fashion-MNIST: the first 10,000; one in 5 of the rest
    assert list(evaluate) == list(range(10_000)) and tune == range(10_000, 60_000, 5) and len(tune) == 10_000
    evaluate, tune = reference_indices(3_786)  # emoji: one in 5 held out for tune, the others evaluated
    assert tune == range(4, 3_786, 5) and (len(tune), len(evaluate)) == (757, 3_029)
    assert set(tune).isdisjoint(evaluate) and set(tune) | set(evaluate) == set(range(3_786))
    evaluate, tune = reference_indices(15_000)  # just large: the first 10,000 and the 5,000 after them
    assert list(evaluate) == list(range(10_000)) and tune == range(10_000, 15_000)


def test_sample_without_a_class_under_tuned_guidance_draws_classes(world, tmp_path):
    """genforge tune may choose guidance (cfg_scale != 1); plain `sample` then draws each sample's
    class at the training data's frequencies, and says so."""
    run = world["ar"]
    write_sampling(run, {"step": 6, "chosen": {"cfg_scale": 2.0}, "candidates": []})
    code, out, err = cli("sample", run, "--n", 6, "--out", tmp_path / "g.png", "--device", "cpu")
    assert code == 0, err
    assert "cfg_scale 2.0" in out and "no --class: classes drawn at the training data's class frequencies" in out

    model = families.get("prior").load(ckpt.load(run, kind="prior"), torch.device("cpu"))
    frequencies, _ = model.class_frequencies()
    np.testing.assert_allclose(frequencies, np.full(4, 0.25))  # the synthetic data's balanced classes (codes.npz)
    asked = []
    generate = model.network.generate
    model.network.generate = lambda n, labels=None, **kw: asked.append(labels) or generate(n, labels=labels, **kw)
    model._frequencies = (np.array([0.0, 0.0, 1.0, 0.0]), "all class 2")
    model.sample(5, torch.Generator().manual_seed(0))
    assert asked[-1].tolist() == [2] * 5  # drawn from the frequencies
    model.sample(3, torch.Generator().manual_seed(0), cfg_scale=1.0)
    assert asked[-1] is None  # no guidance: no class needed, none drawn
    (run / SAMPLING).unlink()
