"""Model families, each declared once in its own module (see ``registry`` and docs/architecture.md).

Importing this package registers the built-in families: ``gan``, ``stylegan2``, ``fastgan``,
``vqvae`` and ``prior``.
"""

from genforge.families import fastgan, gan, prior, stylegan2, vqvae  # noqa: F401 - imported to register them
from genforge.families.registry import (
    EvalContext,
    FamilySpec,
    Prepared,
    SampleFlag,
    family_of,
    get,
    load,
    names,
    register,
)

__all__ = ["EvalContext", "FamilySpec", "Prepared", "SampleFlag", "family_of", "get", "load", "names", "register"]
