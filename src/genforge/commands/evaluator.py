"""`genforge evaluator train`: the classifier feature network of a dataset (metrics/extractors.py)."""

from __future__ import annotations

import argparse

from genforge.commands.registry import Command, add_device, count
from genforge.metrics.extractors import train_evaluator
from genforge.progress import Reporter
from genforge.training.devices import pick_device


def add_arguments(evaluator: argparse.ArgumentParser) -> None:
    esub = evaluator.add_subparsers(dest="evaluator_command", required=True)
    et = esub.add_parser("train", help="train (or show the cached) classifier on the dataset's labelled train split")
    et.add_argument("--data", required=True, help="a named dataset or path with class labels")
    et.add_argument("--epochs", type=count(1), default=3, help="passes over the train split (default 3)")
    add_device(et)


def run(args: argparse.Namespace) -> int:
    _, info = train_evaluator(args.data, pick_device(args.device), Reporter(), epochs=args.epochs)
    print(f"classifier for {args.data}: test accuracy {info.get('test_accuracy', float('nan')):.4f}")
    return 0


EVALUATOR = Command("evaluator", "the classifier feature network of a dataset", add_arguments, run)
