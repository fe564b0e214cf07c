"""Checkpoints are plain data: safetensors + JSON, written atomically, loaded strictly, never unpickled."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from genforge import checkpoint as ckpt
from genforge.errors import GenforgeError


def sample_tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "model.G.weight": torch.randn(4, 3, generator=g),
        "model.G.bf16": torch.randn(5, generator=g).to(torch.bfloat16),
        "rng.torch": torch.randint(0, 255, (16,), dtype=torch.uint8, generator=g),
        "optim.G.state.0.step": torch.tensor(7.0),
        "counts": torch.arange(6, dtype=torch.int64).reshape(2, 3).t(),  # not contiguous
    }


def save_steps(run: Path, steps, keep: int = 3, kind: str = "gan") -> list[Path]:
    return [ckpt.save(run, s, kind, {"seed": s}, {"w": torch.full((2,), float(s))}, {"s": s}, keep=keep) for s in steps]


class Payload:
    """Unpickling this makes a folder: proof that something executed."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


# ---------------------------------------------------------------------------------------------
# round trip and layout
# ---------------------------------------------------------------------------------------------


def test_round_trip(tmp_path):
    tensors = sample_tensors()
    config = {"model": {"z_dim": 16, "betas": [0.5, 0.9]}, "data": {"source": "x.npz"}}
    state = {
        "elapsed": 12.5,
        "optimizers": {"G": {"param_groups": [{"lr": 2e-4, "foreach": None}]}},
        "extra": {"steps_done": 3},
    }
    folder = ckpt.save(tmp_path, 42, "gan", config, tensors, state)
    assert folder == tmp_path / "checkpoints" / "step-0000042"
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "tensors.safetensors"]
    c = ckpt.load(tmp_path, kind="gan")
    assert (c.kind, c.step, c.path) == ("gan", 42, folder)
    assert c.config == config and c.state == state
    assert set(c.tensors) == set(tensors)
    for name, value in tensors.items():
        assert c.tensors[name].dtype == value.dtype
        assert torch.equal(c.tensors[name], value), name


def test_load_accepts_run_checkpoints_and_step_folders_and_meta_file(tmp_path):
    folder = save_steps(tmp_path, [3])[0]
    for path in (tmp_path, tmp_path / "checkpoints", folder, folder / "meta.json"):
        assert ckpt.load(path).step == 3


def test_keep_last_k_and_latest_pointer(tmp_path):
    save_steps(tmp_path, [1, 2, 3, 4, 5], keep=2)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-0000004", "step-0000005"]
    assert (root / "latest").read_text().strip() == "step-0000005"
    assert ckpt.load(tmp_path).tensors["w"].tolist() == [5.0, 5.0]


def test_saving_the_same_step_again_replaces_it(tmp_path):
    ckpt.save(tmp_path, 7, "gan", {}, {"w": torch.zeros(2)}, {})
    ckpt.save(tmp_path, 7, "gan", {}, {"w": torch.ones(2)}, {"again": True})
    c = ckpt.load(tmp_path)
    assert c.state == {"again": True} and c.tensors["w"].tolist() == [1.0, 1.0]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")]


def test_leftover_tmp_folder_and_lost_pointer_do_not_break_find(tmp_path):
    save_steps(tmp_path, [10, 20])
    root = tmp_path / "checkpoints"
    # A save killed half-way leaves a temporary folder with a newer step and partial files.
    partial = root / ".tmp-step-0000030-abcd"
    partial.mkdir()
    (partial / "tensors.safetensors").write_bytes(b"\x00" * 10)
    # ...and a step folder without meta.json is not complete either.
    (root / "step-0000040").mkdir()
    (root / "step-0000040" / "tensors.safetensors").write_bytes(b"\x00" * 10)
    assert ckpt.find(tmp_path) == root / "step-0000020"
    (root / "latest").unlink()
    assert ckpt.find(tmp_path) == root / "step-0000020"
    assert ckpt.load(tmp_path).step == 20
    (root / "latest").write_text("step-0000099\n")  # points at a folder that is gone
    assert ckpt.find(tmp_path) == root / "step-0000020"


def test_find_in_a_run_without_checkpoints(tmp_path):
    assert ckpt.find(tmp_path) is None
    with pytest.raises(GenforgeError, match="holds no checkpoint yet"):
        ckpt.load(tmp_path)
    with pytest.raises(GenforgeError, match="no such run or checkpoint"):
        ckpt.load(tmp_path / "missing")


def test_wrong_kind_is_refused(tmp_path):
    save_steps(tmp_path, [1], kind="prior")
    with pytest.raises(GenforgeError) as info:
        ckpt.load(tmp_path, kind="gan")
    assert "this is a 'prior' checkpoint, expected 'gan'" in str(info.value)
    with pytest.raises(GenforgeError, match="expected 'gan' or 'vqvae'"):
        ckpt.load(tmp_path, kind=("gan", "vqvae"))
    assert ckpt.load(tmp_path, kind=("gan", "prior")).kind == "prior"


# ---------------------------------------------------------------------------------------------
# refusing pickles and corrupt files
# ---------------------------------------------------------------------------------------------


def test_the_payload_would_execute_if_unpickled(tmp_path):
    # Guards the tests below: without this, "the marker never appears" could not fail.
    marker = tmp_path / "executed"
    pickle.loads(pickle.dumps(Payload(marker)))
    assert marker.is_dir()


@pytest.mark.parametrize("writer", ["torch-zip", "torch-legacy", "pickle-2", "pickle-5", "pickle-0"])
def test_pickle_files_are_refused_without_unpickling(tmp_path, writer):
    marker = tmp_path / "executed"
    obj = {"weights": Payload(marker)}
    bad = tmp_path / "model.pt"
    if writer == "torch-zip":
        torch.save(obj, bad)
    elif writer == "torch-legacy":
        torch.save(obj, bad, _use_new_zipfile_serialization=False)
    else:
        bad.write_bytes(pickle.dumps(obj, protocol=int(writer[-1])))
    # as a file given directly, and as a checkpoint folder's tensor file
    run = tmp_path / "run"
    folder = ckpt.save(run, 1, "gan", {}, {"w": torch.zeros(1)}, {})
    (folder / "tensors.safetensors").write_bytes(bad.read_bytes())
    for path in (bad, run, folder):
        with pytest.raises(GenforgeError) as info:
            ckpt.load(path)
        if writer != "pickle-0":  # protocol 0 has no magic; safetensors then rejects it as garbage
            assert "pickle" in str(info.value)
    assert not marker.exists()


def test_safetensors_header_that_starts_like_a_pickle_is_not_refused(tmp_path):
    # safetensors starts with the header length (u64 little-endian); a length of 640 = 0x280 gives
    # the bytes 0x80 0x02, a protocol-2 pickle's first two bytes. Such a checkpoint is valid.
    for length in range(1, 700):
        tensors = {"w" * length: torch.zeros(1)}
        save_file(tensors, str(tmp_path / "probe"))
        if (tmp_path / "probe").read_bytes()[:2] == b"\x80\x02":
            break
    else:
        pytest.skip("could not make a 640-byte header with this safetensors version")
    ckpt.save(tmp_path / "run", 1, "gan", {}, tensors, {})
    assert ckpt.load(tmp_path / "run").tensors.keys() == tensors.keys()


def test_truncated_tensor_file_is_refused(tmp_path):
    folder = ckpt.save(tmp_path, 1, "gan", {}, {"w": torch.randn(64, 64)}, {})
    data = (folder / "tensors.safetensors").read_bytes()
    for size in (len(data) - 100, 40, 5, 0):
        (folder / "tensors.safetensors").write_bytes(data[:size])
        with pytest.raises(GenforgeError, match="corrupt or truncated tensor file"):
            ckpt.load(tmp_path)


@pytest.mark.parametrize(
    "content, fragment",
    [
        ('{"format": "genforge-checkpoint", "vers', "corrupt checkpoint metadata"),
        (b"\xff\xfe\x00garbage", "corrupt checkpoint metadata"),
        ("[1, 2, 3]", "not a genforge checkpoint"),
        ('{"kind": "gan", "step": 1}', "not a genforge checkpoint"),
        (
            '{"format": "genforge-checkpoint", "version": 99, "kind": "gan", "step": 1, "config": {}}',
            "version 99 is not supported",
        ),
    ],
)
def test_corrupt_meta_is_refused(tmp_path, content, fragment):
    folder = ckpt.save(tmp_path, 1, "gan", {}, {"w": torch.zeros(1)}, {})
    meta = folder / "meta.json"
    meta.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(GenforgeError, match=fragment):
        ckpt.load(tmp_path)


def test_missing_tensor_file_is_refused(tmp_path):
    folder = ckpt.save(tmp_path, 1, "gan", {}, {"w": torch.zeros(1)}, {})
    (folder / "tensors.safetensors").unlink()
    with pytest.raises(GenforgeError, match="incomplete checkpoint, tensors.safetensors is missing"):
        ckpt.load(folder)


def test_meta_is_plain_json(tmp_path):
    folder = ckpt.save(tmp_path, 5, "vqvae", {"a": 1}, {"w": torch.zeros(1)}, {"b": [1, 2]})
    meta = json.loads((folder / "meta.json").read_text())
    assert meta == {
        "format": "genforge-checkpoint",
        "version": 1,
        "kind": "vqvae",
        "step": 5,
        "config": {"a": 1},
        "state": {"b": [1, 2]},
    }


# ---------------------------------------------------------------------------------------------
# packing modules and optimizers
# ---------------------------------------------------------------------------------------------


def small_net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.ReLU(), torch.nn.Linear(4, 2))


def test_module_round_trip_through_a_checkpoint(tmp_path):
    net = small_net(0)
    net.train()(torch.randn(8, 3))  # moves the BN running statistics off their defaults
    ckpt.save(tmp_path, 1, "gan", {}, ckpt.pack_module("model.net", net), {})
    other = small_net(1)
    ckpt.unpack_module("model.net", other, ckpt.load(tmp_path).tensors)
    x = torch.randn(5, 3)
    assert torch.equal(net.eval()(x), other.eval()(x))
    for key, value in net.state_dict().items():
        assert torch.equal(value, other.state_dict()[key])


def _unchanged(module: torch.nn.Module, before: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_unpack_module_is_strict(tmp_path):
    source = ckpt.pack_module("model.net", small_net(0))
    target = small_net(1)
    before = {k: v.clone() for k, v in target.state_dict().items()}

    missing = {k: v for k, v in source.items() if k != "model.net.3.bias"}
    with pytest.raises(GenforgeError, match=r"does not match the model 'model.net': missing \['3.bias'\]"):
        ckpt.unpack_module("model.net", target, missing)

    extra = {**source, "model.net.9.weight": torch.zeros(1)}
    with pytest.raises(GenforgeError, match=r"unexpected \['9.weight'\]"):
        ckpt.unpack_module("model.net", target, extra)

    wrong = {**source, "model.net.0.weight": torch.zeros(4, 5)}
    with pytest.raises(GenforgeError, match=r"0.weight has shape \(4, 5\), model has \(4, 3\)"):
        ckpt.unpack_module("model.net", target, wrong)

    assert _unchanged(target, before)  # nothing half-loaded
    with pytest.raises(GenforgeError, match="missing"):
        ckpt.unpack_module("model.other", target, source)  # another prefix's tensors do not count


def test_optimizer_round_trip_gives_identical_next_steps(tmp_path):
    def step(net, opt, x):
        opt.zero_grad()
        net(x).pow(2).sum().backward()
        opt.step()

    torch.manual_seed(0)
    inputs = [torch.randn(8, 3) for _ in range(5)]
    net = small_net(0)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2, betas=(0.5, 0.9))
    for x in inputs[:3]:
        step(net, opt, x)

    tensors, state = ckpt.pack_optimizer("optim.net", opt)
    tensors.update(ckpt.pack_module("model.net", net))
    ckpt.save(tmp_path, 3, "gan", {}, tensors, {"optimizers": {"net": state}})
    c = ckpt.load(tmp_path)

    other = small_net(1)
    other_opt = torch.optim.Adam(other.parameters(), lr=0.5, betas=(0.1, 0.2))  # hyper-parameters come from the file
    ckpt.unpack_module("model.net", other, c.tensors)
    ckpt.unpack_optimizer("optim.net", other_opt, c.tensors, c.state["optimizers"]["net"])
    assert other_opt.param_groups[0]["lr"] == 1e-2 and other_opt.param_groups[0]["betas"] == (0.5, 0.9)

    for x in inputs[3:]:
        step(net, opt, x)
        step(other, other_opt, x)
    for key, value in net.state_dict().items():
        assert torch.equal(value, other.state_dict()[key]), key
    for p, q in zip(net.parameters(), other.parameters()):
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt.state[p][name], other_opt.state[q][name])


def test_unpack_optimizer_refuses_a_different_group_count():
    net = small_net(0)
    opt = torch.optim.Adam(net.parameters())
    tensors, state = ckpt.pack_optimizer("optim.net", opt)
    two_groups = torch.optim.Adam([{"params": net[0].parameters()}, {"params": net[3].parameters()}])
    with pytest.raises(GenforgeError, match="1 parameter groups, model has 2"):
        ckpt.unpack_optimizer("optim.net", two_groups, tensors, state)
