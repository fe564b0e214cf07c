"""ONNX export: each graph runs in onnxruntime like PyTorch at any batch size; files are written atomically."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from genforge import __version__
from genforge.commands import export
from genforge.errors import GenforgeError
from genforge.models import graphs
from genforge.models.gan import DCGANConfig, Generator
from genforge.models.quantizers import QuantizerConfig
from genforge.models.vqvae import VQVAE, VQVAEConfig

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

Z_DIM = 16
CONFIG = {"model": {"z_dim": Z_DIM}, "train": {"seed": 0}}


def tiny_generator(channels: int = 1, num_classes: int = 0, g_class: str = "concat") -> Generator:
    cfg = DCGANConfig(
        z_dim=Z_DIM, g_width=8, resolution=16, channels=channels, num_classes=num_classes, g_class=g_class
    )
    return Generator(cfg)


def tiny_vqvae(method: str, channels: int = 1, **quantizer) -> VQVAE:
    q = QuantizerConfig(method=method, num_codes=32, fsq_levels=(4, 2, 2, 2), **quantizer)
    return VQVAE(VQVAEConfig(channels=channels, resolution=16, width=8, latent_dim=8, quantizer=q))


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


def check(graph, path) -> dict[str, str]:
    assert export.export_graph(graph, path, {"config": json.dumps(CONFIG), "kind": "test"}) == path
    errors = export.verify(path, graph, batch_sizes=(1, 3))
    for name, error in errors.items():
        if name == "codes":
            assert error == 0.0, errors  # integer outputs exactly
        else:
            assert error < 1e-4, errors
    meta = export.read_metadata(path)
    assert json.loads(meta["config"]) == CONFIG
    assert meta["value_range"] == "[-1, 1]" and meta["genforge_version"] == __version__
    assert meta["graph"] == graph.name and meta["kind"] == "test"
    return meta


def test_generator(tmp_path):
    generator = tiny_generator()
    generator.train()  # exported in eval mode, and given back as it was
    meta = check(graphs.GeneratorGraph(generator, Z_DIM), tmp_path / "g.onnx")
    assert generator.training and all(m.training for m in generator.modules())
    assert json.loads(meta["inputs"]) == [{"name": "z", "shape": ["batch", Z_DIM], "dtype": "float32"}]
    assert json.loads(meta["outputs"]) == [{"name": "images", "shape": ["batch", 1, 16, 16], "dtype": "float32"}]


@pytest.mark.parametrize("g_class", ["concat", "cbn"])
def test_conditional_generator(tmp_path, g_class):
    generator = tiny_generator(3, num_classes=4, g_class=g_class).eval()
    meta = check(graphs.GeneratorGraph(generator, Z_DIM, num_classes=4), tmp_path / "g.onnx")
    assert [i["name"] for i in json.loads(meta["inputs"])] == ["z", "class"]
    assert json.loads(meta["inputs"])[1] == {"name": "class", "shape": ["batch"], "dtype": "int64"}
    assert meta["num_classes"] == "4"


@pytest.mark.parametrize("method, options", [("vq", {}), ("vq", {"cosine": True, "code_dim": 4}), ("fsq", {})])
def test_vqvae_encoder_and_decoder(tmp_path, method, options):
    vqvae = tiny_vqvae(method, 3, **options)
    vqvae.train()
    with torch.no_grad():
        vqvae(torch.rand(16, 3, 16, 16) * 2 - 1)  # k-means initialises the codebook: codes in use, as in a run
    encoder = check(graphs.EncoderGraph(vqvae), tmp_path / "enc.onnx")
    assert json.loads(encoder["outputs"]) == [{"name": "codes", "shape": ["batch", 4, 4], "dtype": "int64"}]
    assert encoder["grid"] == "4x4" and encoder["num_codes"] == str(vqvae.num_codes)
    decoder = check(graphs.DecoderGraph(vqvae), tmp_path / "dec.onnx")
    assert json.loads(decoder["inputs"]) == [{"name": "codes", "shape": ["batch", 4, 4], "dtype": "int64"}]
    assert json.loads(decoder["outputs"])[0]["shape"] == ["batch", 3, 16, 16]


def test_encoder_codes_are_the_model_codes(tmp_path):
    vqvae = tiny_vqvae("vq")
    graph = graphs.EncoderGraph(vqvae)
    (images,) = graph.example_inputs(5)
    with torch.no_grad():
        assert torch.equal(graph(images), vqvae.encode_indices(images))  # the traced distances are the model's


def test_deterministic_bytes(tmp_path):
    graph = graphs.DecoderGraph(tiny_vqvae("fsq"))
    first, second = export.export_graph(graph, tmp_path / "a.onnx"), export.export_graph(graph, tmp_path / "b.onnx")
    assert first.read_bytes() == second.read_bytes()


class Broken(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom")


def test_failure_leaves_nothing_and_keeps_the_old_file(tmp_path):
    out = tmp_path / "model.onnx"
    with pytest.raises(RuntimeError, match="boom"):
        export.export_onnx(Broken(), (torch.zeros(2, 3),), out, input_names=["x"], output_names=["y"])
    assert list(tmp_path.iterdir()) == []
    out.write_bytes(b"old")
    with pytest.raises(TypeError, match="strings"):
        export.export_graph(graphs.DecoderGraph(tiny_vqvae("fsq")), out, {"steps": 3})
    assert out.read_bytes() == b"old" and list(tmp_path.iterdir()) == [out]


def test_refuses_a_folder_and_what_cannot_be_exported(tmp_path):
    with pytest.raises(GenforgeError, match="is a folder"):
        export.export_graph(graphs.GeneratorGraph(tiny_generator(), Z_DIM), tmp_path)
    with pytest.raises(GenforgeError, match=r"^cannot export a prior's sampling loop to ONNX: export the decoder"):
        export.refuse("a prior's sampling loop", "export the decoder")
