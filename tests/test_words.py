"""One word, one meaning: in genforge's source `kind` names the model family and nothing else.

A learning-rate schedule has a name, a CIFAR archive a version, a config field an annotation;
when each of them was also a `kind`, a reader could not tell from the word which one a line meant.
The checker walks every module of src/genforge and reports each place where genforge *chooses*
the word: a name it binds (parameter, variable, class field, attribute it assigns, function,
import), a keyword it passes, or the string "kind" (a JSON field, a config key); identifiers ending
in `_kind` count too. Reads are not reported: reading `c.kind` follows from a binding reported here,
or from a third party's attribute whose word is not ours to choose.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "genforge"

# Where genforge binds `kind`, meaning the family: (module, function or class, with everything
# nested in it) -> why.
FAMILY_SCOPES = {
    ("checkpoint.py", "Checkpoint"): "a loaded checkpoint's family",
    ("checkpoint.py", "save"): "the family written to meta.json",
    ("checkpoint.py", "load"): "the families the caller accepts",
    ("training/loop.py", "run"): "the family the run's checkpoints are saved as",
    ("training/loop.py", "Checkpoints"): "the same, kept for every save",
    ("families/registry.py", "family_of"): "meta.json's family, read without the tensors",
    ("report/collect.py", "RunSummary"): "a run's family, shown on its report card",
    ("commands/sample.py", "cannot_sample"): "the family named in the refusal",
}

# Calls that may be passed `kind=`: the callee as written -> what the word means there.
KEYWORD_CALLEES = {
    "ckpt.load": "checkpoint.load's families",
    "run": "training.loop.run's family",
    "RunSummary": "the report's family field",
    "np.argsort": "numpy's word (the sort algorithm), not ours to choose",
}

# Modules that spell the string "kind": fields users, stored run folders or old configs hold.
STRING_MODULES = {
    "checkpoint.py": "meta.json's family field, written and checked",
    "families/registry.py": "meta.json's family field, read",
    "report/collect.py": "meta.json's family field, read",
    "commands/evaluate.py": "evaluate's JSON field: the family, or 'real-vs-real'",
    "commands/export.py": "the ONNX file's metadata: the family",
    "families/vqvae.py": "genforge 0.1 configs called the quantizer's method `kind` (migrate reads it)",
    "families/prior.py": "genforge 0.1 configs called the prior's network `kind` (migrate reads it)",
}


@dataclass(frozen=True)
class Use:
    module: str
    line: int
    scope: str  # the enclosing function or class, dotted ("" at module level)
    what: str  # e.g. "parameter kind", "keyword kind= to Schedule"
    allowed_by: str | None  # the allowlist entry that permits it; None: a violation


def _is_word(name: str | None) -> bool:
    return name is not None and (name == "kind" or name.endswith("_kind"))


def _within(scope: str, entry: str) -> bool:
    return scope == entry or scope.startswith(entry + ".")


class _Checker(ast.NodeVisitor):
    def __init__(self, module: str):
        self.module, self.scopes, self.uses = module, [], []

    def _report(self, node: ast.AST, what: str, callee: str | None = None) -> None:
        scope = ".".join(self.scopes)
        allowed = None
        if callee is not None and callee in KEYWORD_CALLEES:
            allowed = f"call {callee}"
        for module, entry in FAMILY_SCOPES:
            if allowed is None and module == self.module and _within(scope, entry):
                allowed = f"{module}:{entry}"
        self.uses.append(Use(self.module, node.lineno, scope, what, allowed))

    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        self.scopes.append(node.name)
        if _is_word(node.name):
            self._report(node, f"definition {node.name}")
        self.generic_visit(node)
        self.scopes.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    def visit_arg(self, node: ast.arg) -> None:
        if _is_word(node.arg):
            self._report(node, f"parameter {node.arg}")

    def visit_Name(self, node: ast.Name) -> None:
        if _is_word(node.id) and not isinstance(node.ctx, ast.Load):
            self._report(node, f"variable {node.id}")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if _is_word(node.attr) and not isinstance(node.ctx, ast.Load):
            self._report(node, f"attribute {node.attr}")
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        callee = ast.unparse(node.func)
        for keyword in node.keywords:
            if _is_word(keyword.arg):
                self._report(keyword, f"keyword {keyword.arg}= to {callee}", callee)
        self.generic_visit(node)

    def visit_alias(self, node: ast.alias) -> None:
        name = node.asname or node.name.rsplit(".", 1)[-1]
        if _is_word(name):
            self._report(node, f"import {name}")

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if _is_word(node.name):
            self._report(node, f"exception name {node.name}")
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if node.value == "kind":
            allowed = self.module if self.module in STRING_MODULES else None
            self.uses.append(Use(self.module, node.lineno, ".".join(self.scopes), 'string "kind"', allowed))


def uses_of_the_word(source: str, module: str) -> list[Use]:
    """Every place ``source`` (the module at ``module``, relative to src/genforge) chooses `kind`."""
    checker = _Checker(module)
    checker.visit(ast.parse(source))
    return checker.uses


def _all_uses() -> list[Use]:
    return [
        use
        for path in sorted(SRC.rglob("*.py"))
        for use in uses_of_the_word(path.read_text(), path.relative_to(SRC).as_posix())
    ]


def test_kind_means_the_family_only():
    wrong = [f"{u.module}:{u.line} ({u.scope or 'module'}): {u.what}" for u in _all_uses() if u.allowed_by is None]
    assert not wrong, "`kind` means the model family only; rename these:\n" + "\n".join(wrong)


def test_every_allowlist_entry_is_still_needed():
    used = {u.allowed_by for u in _all_uses()}
    entries = (
        {f"{module}:{scope}" for module, scope in FAMILY_SCOPES}
        | {f"call {callee}" for callee in KEYWORD_CALLEES}
        | set(STRING_MODULES)
    )
    assert entries <= used, f"allowlist entries nothing needs any more: {sorted(entries - used)}"


def test_the_checker_reports_kind_in_other_meanings():
    snippet = """
import numpy as np
from genforge.data.readers import cifar_kind

def lr_factor(step, kind):
    return 1.0 if kind == "constant" else 0.5

class Schedule:
    def __init__(self, name):
        self.kind = name

    def __exit__(self, kind, error, trace):
        pass

def cifar_version(names):
    kind = "cifar10"
    return kind

def loss(recon_kind="mse"):
    return {"kind": recon_kind}

SCHEDULE = Schedule(kind="cosine")
ORDER = np.argsort([2, 1], kind="stable")
"""
    uses = uses_of_the_word(snippet, "families/schedule.py")
    wrong = sorted((u.line, u.what) for u in uses if u.allowed_by is None)
    assert wrong == [
        (3, "import cifar_kind"),
        (5, "parameter kind"),
        (10, "attribute kind"),
        (12, "parameter kind"),
        (16, "variable kind"),
        (19, "parameter recon_kind"),
        (20, 'string "kind"'),
        (22, "keyword kind= to Schedule"),
    ]
    # numpy's own keyword is its word, not ours
    assert [u.allowed_by for u in uses if u.line == 23] == ["call np.argsort"]


def test_the_family_allowlist_is_tied_to_its_module_and_scope():
    snippet = "def save(run_dir, step, kind):\n    return kind\n"
    assert [u.allowed_by for u in uses_of_the_word(snippet, "checkpoint.py")] == ["checkpoint.py:save"]
    assert [u.allowed_by for u in uses_of_the_word(snippet, "families/schedule.py")] == [None]
    nested = "class Checkpoints:\n    def __init__(self, kind):\n        self.kind = kind\n"
    assert all(u.allowed_by for u in uses_of_the_word(nested, "training/loop.py"))
    assert not any(u.allowed_by for u in uses_of_the_word(nested, "training/loopy.py"))
