"""Run-level commands: what `genforge sample | evaluate | reconstruct | encode | compare | demo |
export` do, as library functions over run folders, and every ``genforge`` command's declaration
(``registry.Command``: its arguments and how it runs). The CLI builds its parser from them.

Importing this package registers the built-in commands, in the order ``genforge --help`` lists them.
"""

from genforge.commands import compare, data, demo, evaluate, evaluator, export, reconstruct, sample, train, tune
from genforge.commands.registry import Command, get, register, registered

for _command in (
    train.TRAIN,
    reconstruct.RECONSTRUCT,
    reconstruct.ENCODE,
    sample.SAMPLE,
    tune.TUNE,
    evaluate.EVALUATE,
    evaluator.EVALUATOR,
    compare.COMPARE,
    compare.REPORT,
    demo.DEMO,
    export.EXPORT,
    data.DATA,
):
    register(_command)

__all__ = ["Command", "get", "register", "registered"]
