"""The architecture holds: a family defined here alone trains, resumes, samples, evaluates and
appears in a compare report through the registry; a command defined here alone appears in
``genforge --help`` and runs; genforge's modules import in layers, with no cycle; function-local
imports are only for optional dependencies, each with its reason."""

from __future__ import annotations

import argparse
import ast
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from genforge import checkpoint as ckpt
from genforge import cli as cli_module
from genforge import families
from genforge.commands import registry as commands
from genforge.commands.registry import Command
from genforge.config import DataConfig, TrainConfig, fill_from_data
from genforge.data import load_configured
from genforge.errors import GenforgeError
from genforge.families import gan_trainer, prior, registry, vqvae
from genforge.families.registry import FamilySpec, Prepared, register, score_generator
from genforge.progress import SILENT, Reporter
from genforge.runfolder import append_record, read_records, record
from genforge.training.api import Trainer
from synthetic import cli, install_evaluator, is_png, one_error, records, write_npz

SRC = Path(__file__).resolve().parents[1] / "src" / "genforge"

# ---------------------------------------------------------------------------------------------
# The toy family of docs/architecture.md, defined in this file only
# ---------------------------------------------------------------------------------------------


@dataclass
class ToyModelConfig:
    resolution: int = 0  # filled from the data
    channels: int = 0

    def __post_init__(self):
        pass


@dataclass
class ToyRunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ToyModelConfig = field(default_factory=ToyModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


class ToyNet(nn.Module):
    """The mean image, learned; samples are the mean plus a little noise."""

    def __init__(self, channels: int, resolution: int):
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(1, channels, resolution, resolution))

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn((n, *self.mean.shape[1:]), generator=generator, device=self.mean.device)
        return (self.mean + 0.1 * noise).clamp(-1, 1).detach()


class ToyTrainer(Trainer):
    def __init__(self, cfg: ToyRunConfig, device: torch.device):
        self.device, self.cfg = device, cfg
        torch.manual_seed(cfg.train.seed)
        self.net = ToyNet(cfg.model.channels, cfg.model.resolution).to(device)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=0.05)
        self.noise = torch.Generator(device=device).manual_seed(cfg.train.seed)

    def modules(self):
        return {"net": self.net}

    def optimizers(self):
        return {"net": self.opt}

    def train_step(self, x, labels):
        loss = (self.net.mean - x).pow(2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return {"loss": loss.detach()}

    def sample_grid(self, n, generator):
        return self.net.sample(n, generator)


def toy_prepare(config: ToyRunConfig, reporter: Reporter) -> Prepared:
    data, config.data = load_configured(config.data)
    fill_from_data(config.model, "model", resolution=data.resolution, channels=data.channels)
    return Prepared(config, data.images, data.labels, data_config=config.data)


class ToyModel:
    num_classes = 0

    def __init__(self, c: ckpt.Checkpoint, device: torch.device):  # the network alone: no trainer, no optimizer
        self.config, self.device, self.step = TOY.config_of(c), device, c.step
        self.net = ToyNet(self.config.model.channels, self.config.model.resolution).to(device)
        ckpt.unpack_module("model.net", self.net, c.tensors)

    def sample(self, n, generator, **options):
        return self.net.sample(n, generator)


class Toy(FamilySpec):
    name = "toy"
    summary = "the mean image plus noise"
    config_class = ToyRunConfig
    presets = {"default": {}}

    def prepare(self, config, reporter):
        return toy_prepare(config, reporter)

    def build(self, prepared, device, dtype):
        return ToyTrainer(prepared.config, device)

    def load(self, checkpoint, device):
        return ToyModel(checkpoint, device)

    def evaluate(self, model, ctx):
        return score_generator(model, ctx)


TOY = Toy()


@pytest.fixture
def toy_family(monkeypatch):
    monkeypatch.setitem(registry.FAMILIES, TOY.name, TOY)  # registered for this test only
    register(TOY)
    return TOY


def test_a_family_defined_in_a_test_trains_resumes_samples_evaluates_and_is_reported(toy_family, tmp_path, monkeypatch):
    data = write_npz(tmp_path / "bars.npz", n=64)
    cache = tmp_path / "cache"
    install_evaluator(cache, str(data))
    monkeypatch.setenv("GENFORGE_CACHE", str(cache))
    run = tmp_path / "runs" / "toy"
    flags = ["--set", "train.batch_size=16", "--set", "train.log_every=2", "--set", "train.precision=fp32"]
    flags += ["--set", "train.channels_last=false", "--device", "cpu", "--quiet"]

    code, _, err = cli("train", "toy", "--data", data, "--out", run, "--steps", 4, *flags)
    assert code == 0, err
    assert ckpt.load(run).kind == "toy" and ckpt.load(run).step == 4
    code, _, err = cli("train", "toy", "--data", data, "--out", run, "--steps", 8, *flags)  # resumes
    assert code == 0, err
    assert [r["step"] for r in records(run, "train")] == [2, 4, 6, 8]
    first = ckpt.load(run).tensors["model.net.mean"]
    assert first.abs().sum() > 0  # it learned something

    code, out, err = cli("sample", run, "--n", 4, "--out", tmp_path / "s.png", "--device", "cpu")
    assert code == 0 and is_png(tmp_path / "s.png"), err
    code, out, err = cli("evaluate", run, "--n", 64, "--device", "cpu", "--json")
    assert code == 0, err
    assert records(run, "evaluation")[-1]["values"]["kind"] == "toy"
    code, out, err = cli("compare", run, "--out", tmp_path / "report.html")
    assert code == 0, err
    page = (tmp_path / "report.html").read_text()
    assert "toy (toy)" in page and "Frechet distance" in page


def test_the_toy_family_is_the_one_in_the_docs():
    """docs/architecture.md shows the same class and function names as the family above."""
    doc = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    for name in ("ToyRunConfig", "ToyTrainer", "ToyModel", "register(", "(FamilySpec):", "score_generator"):
        assert name in doc, name


# ---------------------------------------------------------------------------------------------
# The toy command of docs/architecture.md, defined in this file only
# ---------------------------------------------------------------------------------------------


def add_last_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", type=Path, help="a run folder")
    p.add_argument("--type", default="train", choices=["train", "eval", "evaluation"], help="which records")


def run_last(args: argparse.Namespace) -> int:
    found = [r for r in read_records(args.run) if r["type"] == args.type]
    if not found:
        raise GenforgeError(f"{args.run}: no {args.type} records")  # the CLI makes it one error line
    print(json.dumps(found[-1]["values"]))
    return 0


LAST = Command("last", "the values of a run's last record", add_last_arguments, run_last)

BUILT_IN = ["train", "reconstruct", "encode", "sample", "tune", "evaluate", "evaluator", "compare", "report", "demo"]
BUILT_IN += ["export", "data"]


@pytest.fixture
def toy_command(monkeypatch):
    monkeypatch.setattr(commands, "COMMANDS", dict(commands.COMMANDS))  # registered for this test only
    return commands.register(LAST)


def top_level_help(capsys) -> str:
    with pytest.raises(SystemExit) as exit:
        cli_module.main(["--help"])
    assert exit.value.code == 0
    return capsys.readouterr().out


def test_a_command_defined_in_a_test_is_listed_and_runs(toy_command, tmp_path, capsys):
    page = top_level_help(capsys)
    assert "{" + ",".join([*BUILT_IN, "last"]) + "}" in page
    section = page.split("positional arguments:")[1].split("options:")[0]
    listed = [line.split()[0] for line in section.splitlines() if line[:5].count(" ") == 4]  # not wrapped help
    assert listed == [*BUILT_IN, "last"]  # the built-ins as they were, then the new one
    assert "    last                the values of a run's last record" in page.splitlines()

    append_record(tmp_path, record("train", 2, {"loss": 0.5}))
    append_record(tmp_path, record("train", 4, {"loss": 0.25}))
    code, out, err = cli("last", tmp_path)
    assert (code, out, err) == (0, '{"loss": 0.25}\n', "")
    code, out, err = cli("last", tmp_path, "--type", "eval")  # its GenforgeError: one line, status 2
    assert code == 2 and one_error(err) == f"genforge: error: {tmp_path}: no eval records" and out == ""
    code, _, err = cli("last")  # argparse's complaint about its arguments, the same way
    assert code == 2 and one_error(err) == "genforge: error: genforge last: the following arguments are required: run"


def test_the_built_in_commands_are_listed_in_their_order(capsys):
    assert [c.name for c in commands.registered()] == BUILT_IN  # and no test's command is left behind
    assert "{" + ",".join(BUILT_IN) + "}" in top_level_help(capsys)


def test_two_commands_cannot_share_a_name(monkeypatch):
    monkeypatch.setattr(commands, "COMMANDS", dict(commands.COMMANDS))
    assert commands.register(LAST) is commands.register(LAST)  # registering the same one twice is harmless
    with pytest.raises(GenforgeError, match="two commands are named 'train'"):
        commands.register(Command("train", "another train", add_last_arguments, run_last))
    with pytest.raises(GenforgeError, match="unknown command 'nope'"):
        commands.get("nope")


def test_the_toy_command_is_the_one_in_the_docs():
    doc = (SRC.parents[1] / "docs" / "architecture.md").read_text()
    for name in ("def add_last_arguments(", "def run_last(", 'register(Command("last"'):
        assert name in doc, name


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def genforge_imports(path: Path, top_level_only: bool) -> set[str]:
    """Modules of genforge imported by ``path`` (at the top level only, or anywhere)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("genforge")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + [base]).strip(".")
            if base.startswith("genforge"):
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
    return found


def import_graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in SRC.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        graph[name] = {m for m in genforge_imports(path, top_level_only=False) if m in files and m != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# Each layer may import only from layers below it (see docs/architecture.md).
LAYERS = [
    {
        "genforge.errors",
        "genforge.paths",
        "genforge.runfolder",
        "genforge.checkpoint",
        "genforge.config",
        "genforge.draws",
    },
    {"genforge.images", "genforge.progress"},
    {"genforge.data"},
    {"genforge.metrics"},
    {"genforge.models", "genforge.losses", "genforge.augment"},
    {"genforge.training"},
    {"genforge.families"},
    {"genforge.report", "genforge.commands"},
    {"genforge.cli", "genforge.__main__"},
]


def layer_of(module: str) -> int:
    for index, members in enumerate(LAYERS):
        if any(module == m or module.startswith(m + ".") for m in members):
            return index
    assert module == "genforge", f"{module} belongs to no layer: add it to LAYERS and docs/architecture.md"
    return -1  # the package root


def test_imports_point_down_the_layers():
    upward = []
    for module, imported in import_graph().items():
        for other in imported:
            if layer_of(other) > layer_of(module) >= 0:
                upward.append(f"{module} imports {other}")
    assert not upward, upward


def test_function_local_imports_have_a_reason():
    """Only a deferred optional dependency may be imported inside a function, with its reason."""
    unexplained = []
    for path in SRC.rglob("*.py"):
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)):
                        line = lines[inner.lineno - 1]
                        if not re.search(r"# noqa: PLC0415\W+\S", line):
                            unexplained.append(f"{path.relative_to(SRC)}:{inner.lineno}: {line.strip()}")
    assert not unexplained, unexplained


# ---------------------------------------------------------------------------------------------
# Inference is not training
# ---------------------------------------------------------------------------------------------

# What building a trainer looks like from inside a model class: the trainer itself, an optimizer,
# or reseeding the caller's global RNG (a local torch.Generator(...).manual_seed is fine).
TRAINING_ONLY = ("torch.optim", "torch.manual_seed", "torch.random.manual_seed", "torch.seed")


def test_the_families_inference_models_build_no_trainer_no_optimizer_and_do_not_reseed():
    """Every ``*Model`` class of families/ (what ``load`` builds) names no trainer, no optimizer
    and no global reseeding; tests/test_inference.py checks the same of the loaded objects."""
    found, offending = set(), []
    for path in sorted((SRC / "families").glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            if not (isinstance(node, ast.ClassDef) and node.name.endswith("Model")):
                continue
            found.add(node.name)
            for inner in ast.walk(node):
                if isinstance(inner, ast.Name) and inner.id.endswith("Trainer"):
                    offending.append(f"{path.name}:{inner.lineno}: {node.name} uses {inner.id}")
                elif isinstance(inner, ast.Attribute) and ast.unparse(inner).startswith(TRAINING_ONLY):
                    offending.append(f"{path.name}:{inner.lineno}: {node.name} uses {ast.unparse(inner)}")
    assert {"GANModel", "StyleGAN2Model", "VQVAEModel", "PriorModel"} <= found, found
    assert not offending, offending


# ---------------------------------------------------------------------------------------------
# Interfaces live where they are used
# ---------------------------------------------------------------------------------------------

CAPABILITY_PROBE = re.compile(r"\b(hasattr|getattr)\(\s*(trainer|spec)\b")


def test_training_and_the_families_never_probe_a_trainer_or_spec_for_a_capability():
    """Optional hooks have defaults on ``training.api.Trainer``: callers call them, never ask first."""
    found = set()
    for path in sorted([*(SRC / "training").glob("*.py"), *(SRC / "families").glob("*.py")]):
        for line in path.read_text().splitlines():
            if CAPABILITY_PROBE.search(line):
                found.add((str(path.relative_to(SRC)), line.strip()))
    assert found == set(), sorted(found)


def test_the_probe_finder_finds_probes():
    for line in ('if hasattr(trainer, "watch"):', 'n = getattr(spec, "x", 1)', "getattr( trainer,name)"):
        assert CAPABILITY_PROBE.search(line), line
    assert not CAPABILITY_PROBE.search('getattr(cfg.model, "d_norm", None)')
    assert not CAPABILITY_PROBE.search("getattr(trainers, name)")


def test_every_family_trainer_derives_from_the_trainer_base_class():
    """So that the loop's no-op defaults apply to each, and a missing required method fails at build."""
    for cls in (gan_trainer.GANTrainer, vqvae.VQVAETrainer, prior.PriorTrainer, ToyTrainer):
        assert issubclass(cls, Trainer), cls

    class Incomplete(Trainer):
        def modules(self):
            return {}

    with pytest.raises(TypeError, match="abstract"):
        Incomplete()


def test_the_trainer_defaults_are_no_ops():
    trainer = ToyTrainer(ToyRunConfig(model=ToyModelConfig(resolution=4, channels=1)), torch.device("cpu"))
    assert trainer.extra_state() == ({}, {}) and trainer.load_extra_state({}, {}) is None
    assert trainer.log_extras() == {} and trainer.watch({"loss": 1.0}) is None
    assert trainer.batches_per_step == 1 and trainer.state_records == frozenset()
    assert trainer.evaluation_samples is None


def test_every_family_is_a_class_of_its_own_module():
    """A family is a FamilySpec subclass in its own module whose methods an editor can follow:
    the four required ones are defined in that class, not stored as values on an instance."""
    for name in families.names():
        cls = type(families.get(name))
        assert issubclass(cls, FamilySpec) and cls is not FamilySpec, name
        assert cls.__module__ == f"genforge.families.{name}", cls
        for method in ("prepare", "build", "load", "evaluate"):
            assert callable(vars(cls).get(method)), (name, method)
            assert method not in vars(families.get(name)), (name, method)  # not an instance attribute


def test_a_family_without_a_required_method_cannot_be_built_and_its_hooks_default_to_nothing():
    class Half(FamilySpec):
        name = "half"
        summary = "half a family"
        config_class = ToyRunConfig
        presets = {"default": {}}

        def prepare(self, config, reporter):
            return toy_prepare(config, reporter)

    with pytest.raises(TypeError, match="abstract"):
        Half()
    toy, config = Toy(), {"data": {"source": "x"}}
    assert toy.migrate(config) is config and toy.from_arguments(argparse.Namespace()) == {}
    assert toy.training_data(None, Path("."), torch.device("cpu"), SILENT) is None
    assert toy.finish(Path("."), None, torch.device("cpu"), SILENT) is None
    assert toy.sample_flags == () and not toy.exports and toy.grid_caption == "samples"


LONGEST_LOOP_FUNCTION = 60


def test_the_training_loop_is_made_of_small_functions():
    """Every function in training/loop.py (methods included) has a body under 60 lines."""
    tree = ast.parse((SRC / "training" / "loop.py").read_text())
    lengths = {
        node.name: node.end_lineno - node.body[0].lineno + 1
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    }
    assert "run" in lengths and lengths["run"] > 10, lengths  # the parse found the loop
    long = {name: n for name, n in lengths.items() if n >= LONGEST_LOOP_FUNCTION}
    assert not long, long
