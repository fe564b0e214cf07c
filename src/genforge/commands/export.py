"""``genforge export``: a GAN's generator, or a VQ-VAE's encoder and decoder, as ONNX files.

Optional (``pip install onnx onnxruntime``, or ``pip install -e '.[onnx]'`` in the checkout).
What a run can export is declared by its family (``FamilySpec.exports``: part name -> a graph
from ``models/graphs.py``), whose inputs and outputs are plain tensors with a dynamic batch
dimension.

The file carries what a user needs to call it in ``metadata_props``: the graph, its inputs and
outputs (names, shapes with "batch", dtypes), the value range, the run's config as JSON and the
genforge version. A prior's sampling loop is not exported (``refuse``): export the decoder and
draw codes in PyTorch.

Exporter: torch's TorchScript-based exporter (``dynamo=False``), not the torch.export one that
torch >= 2.9 uses by default. For these networks it is the one that works and stays small:
 * the models check their inputs in Python (``_check_indices`` reads ``int(indices.min())``);
   a trace runs such checks once on the example, where torch.export refuses the data-dependent
   branch (``GuardOnDataDependentSymNode``) and the decoder cannot be exported at all; it also
   fixed the VQ encoder's batch size without a word (the loop in ``nearest_code``);
 * it needs no ``onnxscript`` (nor its ``onnx_ir``), takes about 0.3 s a graph
   where torch.export takes 2-6 s, and writes the same bytes for the same weights.
It is deprecated upstream; ``torch.onnx.export`` still ships it in torch 2.13 (the version the
project pins), and the tests run every exported graph in onnxruntime, so its removal cannot
pass unnoticed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import torch.nn as nn

from genforge import __version__, families
from genforge import checkpoint as ckpt
from genforge.commands.registry import Command
from genforge.config import to_dict
from genforge.errors import GenforgeError
from genforge.models.graphs import DecoderGraph, EncoderGraph, GeneratorGraph
from genforge.runfolder import atomic_write

OPSET = 17  # ONNX 1.12 (2022): every maintained runtime reads it
VALUE_RANGE = "[-1, 1]"
BATCH = "batch"  # the name of the dynamic first dimension
INSTALL_HINT = (
    "ONNX export needs the onnx package: pip install onnx onnxruntime (or, in the genforge checkout, "
    "pip install -e '.[onnx]')"
)


def refuse(what: str, hint: str = "") -> NoReturn:
    """Stop with one line: ``what`` cannot be exported to ONNX (and what to do instead)."""
    raise GenforgeError(f"cannot export {what} to ONNX" + (f": {hint}" if hint else ""))


def _onnx() -> Any:
    try:
        import onnx  # noqa: PLC0415 (optional dependency, needed only to export)
    except ImportError:
        raise GenforgeError(INSTALL_HINT) from None
    return onnx


# ---------------------------------------------------------------------------------------------
# Writing and checking files


@contextlib.contextmanager
def _inference(module: nn.Module) -> Iterator[None]:
    """Eval mode (batch norm uses its running statistics) and no autograd, restored afterwards."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, training in modes:
            m.training = training


def _signature(names: Sequence[str], tensors: Sequence[torch.Tensor], dynamic_batch: bool) -> str:
    return json.dumps(
        [
            {
                "name": name,
                "shape": [BATCH if dynamic_batch and i == 0 else n for i, n in enumerate(t.shape)],
                "dtype": str(t.dtype).removeprefix("torch."),
            }
            for name, t in zip(names, tensors, strict=True)
        ]
    )


def export_onnx(
    module: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    out: str | Path,
    *,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_batch: bool = True,
    metadata: Mapping[str, str] | None = None,
    opset: int = OPSET,
) -> Path:
    """Trace ``module`` on ``example_inputs`` into the ONNX file ``out``, written atomically.

    ``metadata`` (strings) goes into the model's ``metadata_props`` beside what is always
    recorded: ``inputs``/``outputs`` (JSON: name, shape with "batch", dtype), ``exporter`` and
    ``genforge_version``. On any failure nothing is left at ``out`` (an old file stays as it was).
    """
    onnx = _onnx()
    out = Path(out)
    if out.is_dir():
        raise GenforgeError(f"{out} is a folder; give the ONNX file's path, e.g. {out / 'model.onnx'}")
    metadata = dict(metadata or {})
    for key, value in metadata.items():
        if not isinstance(value, str):
            raise TypeError(f"ONNX metadata values are strings; {key!r} is {type(value).__name__}")
    with _inference(module):
        outputs = module(*example_inputs)
        outputs = (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)
        buffer = io.BytesIO()
        with warnings.catch_warnings():
            # the deprecation notice of this exporter (see the module docstring), and the tracer's
            # notes that the models' Python shape checks run once, on the example, as intended
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", UserWarning)  # constant-folding notes about slices: harmless
            torch.onnx.export(
                module,
                example_inputs,
                buffer,
                input_names=list(input_names),
                output_names=list(output_names),
                dynamic_axes={name: {0: BATCH} for name in (*input_names, *output_names)} if dynamic_batch else None,
                opset_version=opset,
                dynamo=False,
            )
    model = onnx.load_from_string(buffer.getvalue())
    recorded = {
        **metadata,
        "inputs": _signature(input_names, example_inputs, dynamic_batch),
        "outputs": _signature(output_names, outputs, dynamic_batch),
        "exporter": f"torch {torch.__version__} TorchScript exporter, opset {opset}",
        "genforge_version": __version__,
    }
    del model.metadata_props[:]
    for key, value in recorded.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model)
    atomic_write(out, model.SerializeToString())
    return out


def export_graph(
    graph: GeneratorGraph | EncoderGraph | DecoderGraph, out: str | Path, metadata: Mapping[str, str] | None = None
) -> Path:
    """Export one of the graphs above with its names, a dynamic batch and its own facts.

    ``metadata`` adds the caller's facts, e.g. ``{"config": json.dumps(config), "kind": "gan"}``.
    """
    facts = {"graph": graph.name, "value_range": VALUE_RANGE, **graph.describe(), **(metadata or {})}
    return export_onnx(
        graph,
        graph.example_inputs(),
        out,
        input_names=graph.input_names,
        output_names=graph.output_names,
        metadata=facts,
    )


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file, without loading its weights."""
    model = _onnx().load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}


def verify(path: str | Path, graph: nn.Module, batch_sizes: Sequence[int] = (1, 3), seed: int = 1) -> dict[str, float]:
    """Run the file in onnxruntime (CPU) and ``graph`` in PyTorch on the same random inputs.

    Returns, per output, the worst disagreement over ``batch_sizes``: the largest absolute
    difference for float outputs, the fraction of differing entries for integer ones (codes).
    Two batch sizes other than the example's show that the batch dimension is really dynamic.
    """
    try:
        import onnxruntime  # noqa: PLC0415 (optional dependency, needed only to check an export)
    except ImportError:
        raise GenforgeError(
            "checking an ONNX file needs onnxruntime: pip install onnxruntime (or, in the genforge checkout, "
            "pip install -e '.[onnx]'); --no-check skips the check"
        ) from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    worst = dict.fromkeys(names, 0.0)
    for batch in batch_sizes:
        inputs = graph.example_inputs(batch, seed + batch)
        with _inference(graph):
            expected = graph(*inputs)
        expected = (expected,) if isinstance(expected, torch.Tensor) else expected
        feeds = {i.name: t.cpu().numpy() for i, t in zip(session.get_inputs(), inputs, strict=True)}
        for name, want, got in zip(names, expected, session.run(None, feeds), strict=True):
            want = want.cpu().numpy()
            if got.shape != want.shape or got.dtype != want.dtype:
                raise GenforgeError(
                    f"{path}: output {name} is {got.dtype} {got.shape} at batch {batch}, expected {want.dtype} {want.shape}"
                )
            if np.issubdtype(want.dtype, np.integer):
                worst[name] = max(worst[name], float(np.mean(got != want)))
            else:
                worst[name] = max(worst[name], float(np.max(np.abs(got.astype(np.float64) - want), initial=0.0)))
    return worst


FORMATS = ("onnx",)


def export(
    run: str | Path,
    out: str | Path,
    *,
    fmt: str = "onnx",
    part: str | None = None,
    check: bool = True,
) -> tuple[Path, str, dict[str, float]]:
    """Export ``part`` of a run (default: its family's first) to ``out``; with ``check``, run the
    file in onnxruntime beside PyTorch. Returns (path, part, worst differences per output)."""
    if fmt not in FORMATS:
        raise GenforgeError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    _onnx()  # the optional dependency, before any work
    c = ckpt.load(run, kind=tuple(families.names()), map_location="cpu")
    spec = families.get(c.kind)
    if not spec.exports:
        refuse(f"a {c.kind} run", spec.cannot_export or "its family declares nothing exportable")
    part = part or next(iter(spec.exports))
    if part not in spec.exports:
        raise GenforgeError(f"a {c.kind} run exports {', '.join(spec.exports)}; there is no part {part!r}")
    graph = spec.exports[part](spec.load(c, torch.device("cpu")))
    config = json.dumps(to_dict(spec.config_of(c)))
    path = export_graph(graph, out, {"config": config, "kind": c.kind, "step": str(c.step)})
    return path, part, verify(path, graph) if check else {}


# ---------------------------------------------------------------------------------------------
# The command line: genforge export
# ---------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="a run folder or checkpoint")
    p.add_argument("--format", default="onnx", choices=FORMATS, help="file format (default onnx)")
    p.add_argument("--out", type=Path, required=True, help="the file to write, e.g. generator.onnx")
    p.add_argument("--part", help="what to export (GAN: generator; VQ-VAE: decoder or encoder); default the first")
    p.add_argument("--no-check", action="store_true", help="skip running the file in onnxruntime beside PyTorch")


def run(args: argparse.Namespace) -> int:
    path, part, worst = export(args.run, args.out, fmt=args.format, part=args.part, check=not args.no_check)
    checked = ", ".join(f"{name} max |onnxruntime - torch| {value:.2e}" for name, value in worst.items())
    print(f"wrote the {part} of {args.run} to {path}" + (f" ({checked})" if checked else ""))
    return 0


EXPORT = Command("export", "a run's generator (or VQ-VAE encoder/decoder) as an ONNX file", add_arguments, run)
