"""Several processes (torchrun / DDP, gloo on CPU), two ranks of one thread each: every family trains
and resumes with only rank 0 writing; two ranks with half the batch each end where one process
with the whole batch ends; the VQ codebook stays the same on every rank; killing a rank ends the
job with one clear line and the same command resumes it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from genforge import checkpoint as ckpt
from genforge import families
from genforge.data import PackedImages, PackWriter
from genforge.draws import Share
from genforge.errors import GenforgeError
from genforge.models.maskgit import MaskGIT, MaskGITConfig
from genforge.models.transformer import drop_classes
from genforge.training import distributed, runs
from genforge.training.batches import Batches
from synthetic import (
    COMMON,
    TINY_GAN,
    TINY_PRIOR,
    TINY_VQVAE,
    cli,
    install_evaluator,
    one_error,
    respec,
    sets,
    train,
    write_idx_folder,
    write_npz,
)

WORLD = 2
FAST = ["train.precision=fp32", "train.channels_last=false", "train.device=cpu", "train.tensorboard=false"]


# ---------------------------------------------------------------------------------------------
# Two processes, as torchrun would start them
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, port: int, worker, args: tuple) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    # One process group for the worker's runs (``distributed.session`` keeps a group it did not
    # start): a second group on the same port right after the first could meet the old one.
    dist.init_process_group("gloo", timeout=timedelta(seconds=60))
    try:
        worker(rank, *args)
        dist.barrier()  # leave together (as distributed.session does)
    finally:
        dist.destroy_process_group()


def spawn(worker, *args, timeout: float = 120.0) -> None:
    """Run ``worker(rank, *args)`` in two processes; a failure in either fails the test.

    Forked, so that the workers start at once with genforge imported (spawning costs seconds of
    imports per rank), unless this process runs threads a fork could catch holding a lock (tqdm's
    monitor holds only tqdm's, and the workers draw no bars).
    """
    quiet = all(t is threading.main_thread() or t.name == "tqdm_monitor" for t in threading.enumerate())
    method = "fork" if quiet and sys.platform == "linux" else "spawn"
    context = mp.start_processes(
        _entry, args=(free_port(), worker, args), nprocs=WORLD, join=False, start_method=method
    )
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise AssertionError(f"the two ranks did not finish within {timeout} s")


def watch_writes(rank: int, out: Path) -> list[str]:
    """On ranks other than 0, the list of every later attempt to create, change or remove anything
    under ``out`` (an audit hook sees open-for-writing, mkdir, rename/replace, remove)."""
    seen: list[str] = []
    if rank == 0:
        return seen
    root = str(out.resolve())

    def hook(event: str, args: tuple) -> None:
        if event not in ("open", "os.mkdir", "os.rename", "os.remove", "os.rmdir", "shutil.rmtree"):
            return
        path = args[0]
        if event == "open":
            mode, flags = args[1], args[2]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT)
            )
            if not writing:
                return
        if isinstance(path, (str, bytes, os.PathLike)) and os.path.abspath(os.fsdecode(path)).startswith(root):
            seen.append(f"{event} {os.fsdecode(path)}")

    sys.addaudithook(hook)
    return seen


def report_writes(rank: int, seen: list[str], log: str) -> None:
    if rank != 0:
        Path(log).write_text(json.dumps(seen))


TINY_STYLEGAN2 = ["model.width=8", "model.max_width=16", "model.z_dim=16", "model.w_dim=16"]


def config_of(family: str, *sets: str, **extra):
    spec = families.get(family)
    tiny = {"gan": TINY_GAN, "stylegan2": TINY_STYLEGAN2, "vqvae": TINY_VQVAE, "prior": TINY_PRIOR}[family]
    return spec.resolve("default", None, [*COMMON, *tiny, *FAST, *sets], extra or None)


def writes_of_rank_1(log: Path) -> list[str]:
    assert log.is_file(), "rank 1 did not report its writes"
    return json.loads(log.read_text())


# ---------------------------------------------------------------------------------------------
# GAN: 2 ranks x B/2 == 1 process x B
# ---------------------------------------------------------------------------------------------

# Spectral-norm D (no batch statistics), the generator's batch norm synchronised, no EMA: the two
# ranks' batches and noise together are exactly the one process's. Augmentation, StyleGAN2's noise
# and style mixing, and WGAN-GP's interpolation draw each rank's rows of one global draw.
STEPS = [
    "train.batch_size=8",
    "train.checkpoint_every=2",
    "train.steps=4",
    "train.log_every=2",
    "train.eval_every=4",  # evaluated once, by rank 0, while rank 1 waits
    "train.eval_samples=32",
]
GAN_EXACT = [
    "model.z_dim=16",
    "model.d_norm=spectral",
    "optim.loss=hinge",
    "optim.r1_gamma=1",  # a double backward through the unwrapped D, averaged with the rest
    "optim.ema_decay=0",
    "train.sync_batchnorm=true",
    *STEPS,
]
EXACT = {
    "gan": GAN_EXACT,
    # DiffAugment's ops at p = 0.5 (on reals, fakes and R1's reals), and WGAN-GP's interpolates
    "diffaugment": [*GAN_EXACT, "optim.loss=wgan-gp", "augment.policy=diffaugment", "augment.p=0.5"],
    # ADA's pipeline, its p moving every 3 steps (the checkpoint at step 2 holds signs not yet used),
    # per-pixel noise, style mixing, lazy R1; no minibatch standard deviation (its groups are per rank).
    # Adam with beta1 0 at StyleGAN2's rate 0.0025 turns the all-reduce's rounding into 2e-6
    # differences in 4 steps (measured); at 1e-4, 2.7e-7, and a wrong draw would still show at ~1e-4.
    "stylegan2": [
        "model.mbstd_channels=0",
        "optim.lr_g=0.0001",
        "optim.lr_d=0.0001",
        "optim.ema_decay=0",
        "optim.ema_kimg=0",
        # path length: each rank's penalty uses its own batch's mean length, as the reference's
        # (tested for two ranks in test_stylegan2_reg.py), so it is not the one-process penalty
        "optim.pl_weight=0",
        "optim.r1_interval=2",
        "augment.p=0.2",
        "augment.interval=3",
        "augment.speed=200",
        *STEPS,
    ],
}


def family_of(case: str) -> str:
    return "stylegan2" if case == "stylegan2" else "gan"


def gan_worker(rank: int, case: str, data: str, out: str, log: str) -> None:
    seen = watch_writes(rank, Path(out))
    spec = families.get(family_of(case))
    config = lambda: config_of(spec.name, *EXACT[case], data={"source": data})
    first = runs.train(spec, config(), out, stop_after=2)
    assert (first.step, first.interrupted) == (2, True)
    second = runs.train(spec, config(), out)
    assert (second.step, second.interrupted) == (4, False)
    report_writes(rank, seen, log)


@pytest.mark.parametrize("case", list(EXACT))
def test_gan_two_ranks_with_half_the_batch_end_where_one_process_ends(tmp_path, monkeypatch, case):
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))
    data = str(write_npz(tmp_path / "data.npz", n=64))
    install_evaluator(tmp_path / "cache", data)
    two, one, log = tmp_path / "two", tmp_path / "one", tmp_path / "writes.json"
    spawn(gan_worker, case, data, str(two), str(log))
    assert writes_of_rank_1(log) == []
    spec = families.get(family_of(case))
    runs.train(spec, config_of(spec.name, *EXACT[case], data={"source": data}), one)

    a, b = ckpt.load(two), ckpt.load(one)
    assert a.step == b.step == 4 and a.state["world_size"] == 2 and b.state["world_size"] == 1
    weights = [k for k in a.tensors if k.startswith("model.")]
    assert {k.split(".")[1] for k in weights} == {"G", "D"}
    for name in weights:  # sums in another order (all-reduce): equal to float rounding (measured: 1.2e-7)
        if name.endswith("w_avg"):  # StyleGAN2's running mean of w: each rank's own batch (rank 0's saved)
            continue
        torch.testing.assert_close(a.tensors[name], b.tensors[name], rtol=1e-5, atol=1e-6, msg=name)
    if case == "stylegan2":  # ADA's controller, resumed mid-interval, saw the same signs and moved p alike
        ada_a, ada_b = a.state["extra"]["ada"], b.state["extra"]["ada"]
        assert ada_a["step"] == 4 and ada_a["p"] != 0.2 and ada_a["last_rt"] is not None
        assert ada_a["p"] == pytest.approx(ada_b["p"], abs=1e-12) and ada_a["last_rt"] == ada_b["last_rt"]
        assert torch.equal(a.tensors["extra.ada.signs"], b.tensors["extra.ada.signs"])
    logged = [(r["type"], r["step"]) for r in map(json.loads, (two / "metrics.jsonl").read_text().splitlines())]
    assert logged == [("train", 2), ("train", 4), ("eval", 4)]
    assert (two / "samples" / "final.png").is_file() and (two / "config.yaml").is_file()

    # a run resumes with the number of processes it was trained with
    more = config_of(spec.name, *EXACT[case], "train.steps=6", data={"source": data})
    with pytest.raises(GenforgeError, match="was trained by 2 processes .* this command starts one"):
        runs.train(spec, more, two)


# ---------------------------------------------------------------------------------------------
# VQ-VAE: the codebook is the same on every rank
# ---------------------------------------------------------------------------------------------


def vqvae_worker(rank: int, data: str, out: str, log: str, dump: str) -> None:
    seen = watch_writes(rank, Path(out))
    spec, built = families.get("vqvae"), []
    capture = respec(spec, build=lambda *args: built.append(spec.build(*args)) or built[-1])
    # k-means initialisation and a dead-code restart after 2 steps both happen in these 6 steps
    sets = ["train.steps=6", "train.checkpoint_every=3", "model.quantizer.restart_after=2"]
    config = lambda: config_of("vqvae", *sets, data={"source": data})
    assert runs.train(capture, config(), out, stop_after=3).step == 3
    assert runs.train(capture, config(), out).step == 6
    quantizer = built[-1].model.quantizer
    buffers = {name: value.numpy() for name, value in quantizer.state_dict().items()}
    np.savez(f"{dump}-{rank}.npz", **buffers)
    report_writes(rank, seen, log)


def test_vqvae_codebook_is_the_same_on_both_ranks(tmp_path):
    data = str(write_npz(tmp_path / "data.npz", n=64))
    out, log, dump = tmp_path / "vq", tmp_path / "writes.json", tmp_path / "quantizer"
    spawn(vqvae_worker, data, str(out), str(log), str(dump))
    assert writes_of_rank_1(log) == []
    with np.load(f"{dump}-0.npz") as a, np.load(f"{dump}-1.npz") as b:
        assert set(a.files) >= {"codebook", "cluster_size", "embed_sum", "initialised", "last_used"}
        for name in a.files:
            assert np.array_equal(a[name], b[name]), name
        assert bool(a["initialised"])
        saved = ckpt.load(out)
        assert saved.step == 6
        assert np.array_equal(saved.tensors["model.vqvae.quantizer.codebook"].numpy(), a["codebook"])


# ---------------------------------------------------------------------------------------------
# Prior: the code cache is made once, by rank 0
# ---------------------------------------------------------------------------------------------


def prior_worker(rank: int, vqvae: str, out: str, log: str, dump: str) -> None:
    seen = watch_writes(rank, Path(out))
    # the precision is measured (briefly) in step on both ranks, and rank 0's choice taken by both
    sets = ["train.steps=4", "train.checkpoint_every=2", "train.log_every=2"]
    sets += ["train.precision=auto", "train.probe_seconds=0.02"]
    spec, built = families.get("prior"), []
    capture = respec(spec, build=lambda *args: built.append(spec.build(*args)) or built[-1])
    assert runs.train(capture, config_of("prior", *sets, vqvae=vqvae), out, stop_after=2).step == 2
    Path(f"{dump}-{rank}").write_text(str(built[-1].dtype))
    assert runs.train(capture, config_of("prior", *sets, vqvae=vqvae), out).step == 4
    report_writes(rank, seen, log)


def test_prior_trains_and_resumes_on_two_ranks(tmp_path, monkeypatch):
    monkeypatch.setenv("GENFORGE_CACHE", str(tmp_path / "cache"))  # the precision is measured, not cached
    vq = train("vqvae", tmp_path / "vq", data=write_idx_folder(tmp_path / "bars", 64, 16), steps=3)
    out, log, dump = tmp_path / "prior", tmp_path / "writes.json", tmp_path / "dtype"
    spawn(prior_worker, str(vq), str(out), str(log), str(dump))
    assert writes_of_rank_1(log) == []
    assert Path(f"{dump}-0").read_text() == Path(f"{dump}-1").read_text()  # one choice for both ranks
    assert ckpt.load(out).state["precision"]["precision"] in ("fp32", "bf16")
    saved = ckpt.load(out)
    assert saved.step == 4 and saved.state["world_size"] == 2
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["type"] for r in evals] == ["train", "train", "eval"]  # the held-out loss, once
    assert (out / "codes.npz").is_file()


# ---------------------------------------------------------------------------------------------
# Per-rank randomness: shares of global draws, dropout seeded per (seed, step, rank)
# ---------------------------------------------------------------------------------------------


def rng_worker(rank: int, dump: str) -> None:
    before = torch.get_rng_state()
    with distributed.step_rng(7, 3):
        first = torch.rand(4)
    with distributed.step_rng(7, 3):
        again = torch.rand(4)
    with distributed.step_rng(7, 4):
        later = torch.rand(4)
    restored = torch.equal(torch.get_rng_state(), before)
    share = distributed.share(torch.Generator().manual_seed(0))
    np.savez(
        f"{dump}-{rank}.npz", first=first, again=again, later=later, restored=restored, share=[share.rank, share.size]
    )


def test_dropout_draws_differ_by_rank_and_repeat_by_step(tmp_path):
    spawn(rng_worker, str(tmp_path / "rng"))
    with np.load(tmp_path / "rng-0.npz") as a, np.load(tmp_path / "rng-1.npz") as b:
        assert np.array_equal(a["first"], a["again"]) and not np.array_equal(a["first"], a["later"])
        assert not np.array_equal(a["first"], b["first"])  # the ranks' dropout masks differ
        assert bool(a["restored"]) and bool(b["restored"])  # the global RNG's own stream goes on untouched
        assert list(a["share"]) == [0, 2] and list(b["share"]) == [1, 2]
    with distributed.step_rng(7, 3):  # one process: the global RNG as it is (its state is checkpointed)
        torch.manual_seed(11)
        one = torch.rand(4)
    assert torch.equal(one, torch.rand(4, generator=torch.Generator().manual_seed(11)))


def test_maskgit_masks_and_class_drops_are_each_ranks_rows_of_the_one_process_draw():
    net = MaskGIT(MaskGITConfig(vocab_size=8, grid_h=3, grid_w=3, n_layer=1, n_embd=8, n_head=1))
    whole = net.random_mask(6, torch.Generator().manual_seed(2))
    halves = [net.random_mask(3, Share(torch.Generator().manual_seed(2), r, 2)) for r in range(2)]
    assert torch.equal(torch.cat(halves), whole)
    labels = torch.arange(10).repeat(2)  # (20,)
    whole = drop_classes(labels, 10, 0.5, torch.Generator().manual_seed(3))
    halves = [
        drop_classes(labels[10 * r : 10 * r + 10], 10, 0.5, Share(torch.Generator().manual_seed(3), r, 2))
        for r in range(2)
    ]
    assert torch.equal(torch.cat(halves), whole) and (whole == 10).any() and (whole != 10).any()


def test_a_dataset_smaller_than_the_global_batch_is_refused_under_several_processes():
    with pytest.raises(GenforgeError, match="the data has 6 examples, fewer than train.batch_size 8 .* 2 processes"):
        Batches(torch.zeros(6, 4, 4, 1, dtype=torch.uint8), None, 8, 0, world_size=2)
    assert (
        len(Batches(torch.zeros(6, 4, 4, 1, dtype=torch.uint8), None, 8, 0).get(0)[0]) == 6
    )  # one process: a short batch
    share = [Batches(torch.zeros(8, 4, 4, 1, dtype=torch.uint8), None, 8, 0, rank=r, world_size=2) for r in range(2)]
    assert [len(b.get(0)[0]) for b in share] == [4, 4]


def test_the_command_refuses_data_smaller_than_the_global_batch_before_writing(tmp_path, monkeypatch):
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}.items():
        monkeypatch.setenv(name, value)  # rank 0 of 2, as torchrun starts it: refused before it meets rank 1
    data, out = write_npz(tmp_path / "data.npz", n=12), tmp_path / "run"
    code, _, err = cli("train", "gan", "--data", data, "--out", out, "--steps", 2, *sets(COMMON, TINY_GAN, FAST))
    assert code == 2 and "the data has 12 examples, fewer than train.batch_size 16" in one_error(err)
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# The real command line under torchrun; a rank killed mid-run
# ---------------------------------------------------------------------------------------------


def torchrun(out: Path, data: Path, steps: int, family: str = "gan", extra: tuple[str, ...] = ()) -> list[str]:
    tiny = TINY_STYLEGAN2 if family == "stylegan2" else TINY_GAN
    sets = [*COMMON, *tiny, *FAST, "train.checkpoint_every=10", "train.log_every=10", *extra]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={WORLD}",
        "-m",
        "genforge",
        "train",
        family,
        "--data",
        str(data),
        "--out",
        str(out),
        "--steps",
        str(steps),
        *[arg for value in sets for arg in ("--set", value)],
    ]


def start(cmd: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def worker_pid(parent: int, rank: int) -> int | None:
    """The process torchrun (``parent``) started as ``rank``, found by its environment."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds torchrun's workers through /proc")
def test_torchrun_killed_rank_stops_the_job_and_the_same_command_resumes(tmp_path):
    data, out = write_npz(tmp_path / "data.npz", n=64), tmp_path / "run"
    cmd = torchrun(out, data, steps=100_000)
    job = start(cmd)
    try:
        deadline = time.monotonic() + 90
        while not (out / "checkpoints" / "latest").exists():
            assert job.poll() is None, job.communicate()[1]
            assert time.monotonic() < deadline, "no checkpoint within 90 s"
            time.sleep(0.05)
        victim = worker_pid(job.pid, 1)
        assert victim is not None, "rank 1 not found"
        os.kill(victim, signal.SIGKILL)
        _, stderr = job.communicate(timeout=60)  # no hang: the job ends
    finally:
        if job.poll() is None:
            job.kill()
    assert job.returncode != 0
    lines = [line for line in stderr.splitlines() if line.startswith("genforge: error:")]
    assert len(lines) == 1 and "rank 0 of 2: another process of this job stopped" in lines[0], stderr
    assert "is intact; run the same command to resume" in lines[0]
    killed_at = ckpt.load(out).step  # the last checkpoint loads
    assert killed_at >= 10

    steps = killed_at + 10
    again = start(torchrun(out, data, steps=steps))
    stdout, stderr = again.communicate(timeout=120)
    assert again.returncode == 0, stderr
    resumed = [line for line in stderr.splitlines() if line.startswith("resuming ")]
    assert len(resumed) == 1 and f"from step {killed_at}" in resumed[0]  # printed once: rank 0 alone
    assert "2 processes x 8 images" in stderr  # the global batch, and each rank's share
    saved = ckpt.load(out)
    assert saved.step == steps and saved.state["world_size"] == 2
    logged = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == sorted(set(logged)) and logged[-1] == steps  # no step logged twice
    assert f"step {steps}," in stdout


def test_torchrun_trains_a_stylegan2_with_ada(tmp_path):
    """StyleGAN2 (per-pixel noise, style mixing, ADA's pipeline at p 0.5, lazy R1) under the real
    launcher: 2 processes of one thread, gloo."""
    data, out = write_npz(tmp_path / "data.npz", n=64), tmp_path / "sg2"
    extra = (
        "train.checkpoint_every=3",
        "train.log_every=3",
        "augment.p=0.5",
        "augment.interval=2",
        "optim.r1_interval=2",
    )
    job = start(torchrun(out, data, steps=3, family="stylegan2", extra=extra))
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 0, stderr
    assert "2 processes x 8 images" in stderr
    saved = ckpt.load(out)
    assert saved.step == 3 and saved.state["world_size"] == 2 and saved.config["augment"]["policy"] == "ada"
    assert saved.state["extra"]["ada"]["last_rt"] is not None  # the controller ran over both ranks' signs
    (record,) = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert record["step"] == 3 and "augment_p" in record["values"]


def test_world_from_the_environment():
    assert distributed.from_environment({}) == distributed.World()
    env = {"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "h", "MASTER_PORT": "1"}
    assert distributed.from_environment(env) == distributed.World(2, 4, 0)
    with pytest.raises(GenforgeError, match="RANK 4 does not fit WORLD_SIZE 4"):
        distributed.from_environment({**env, "RANK": "4"})
    with pytest.raises(GenforgeError, match="start several processes with torchrun"):
        distributed.from_environment({"WORLD_SIZE": "2", "RANK": "0"})


def test_the_global_batch_must_split_over_the_ranks():
    with pytest.raises(GenforgeError, match="batch_size 10 .* does not split evenly over 4 processes"):
        Batches(torch.zeros(40, 4, 4, 1, dtype=torch.uint8), None, 10, 0, world_size=4)


def test_each_rank_reads_only_its_share_of_each_packed_batch(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (40, 4, 4, 3), dtype=np.uint8)
    with PackWriter(tmp_path / "pack", 4, 4, 3) as writer:
        writer.append(images)
    packed = PackedImages(tmp_path / "pack")
    read: dict[int, list[int]] = {0: [], 1: []}

    class Recording:  # what rank r's dataset handle is asked to read
        def __init__(self, rank):
            self.rank = rank

        def __len__(self):
            return len(packed)

        def take(self, indices):
            read[self.rank] += list(indices)
            return packed.take(indices)

    whole = Batches(packed, None, 8, seed=3)
    # read when asked (ahead=0), so that what one step reads can be counted
    shares = [Batches(Recording(r), None, 8, seed=3, rank=r, world_size=WORLD, ahead=0) for r in range(WORLD)]
    for step in range(12):  # across epoch boundaries (5 batches an epoch)
        read[0].clear(), read[1].clear()
        x, _ = whole.get(step)
        assert torch.equal(torch.cat([share.get(step)[0] for share in shares]), x)  # together: the one batch
        assert len(read[0]) == len(read[1]) == 4 and not set(read[0]) & set(read[1])
