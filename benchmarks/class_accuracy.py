"""Class by class: how often the evaluator classifier finds the class a conditional run was asked
for (`genforge sample RUN --class c`), at each truncation, beside the real test images.

For every class c and every truncation t, ``--n`` samples of ``sample --class c --truncation t``
(t "off": none) are classified; a row gives each class's share classified as c, the mean over
classes, the worst class, and the run's Frechet distance at t (all classes, drawn at the data's
class frequencies, scored as ``genforge evaluate`` scores them). The first row is the real test
images: what samples that look like the data would score.

    python benchmarks/class_accuracy.py RUN [--truncations off,2,1.5,1,0.5] [--n 1000] [--fd-n 10000]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from common import machine, real_class_accuracy
from genforge import checkpoint as ckpt
from genforge import families
from genforge.data import load_dataset
from genforge.families.registry import EvalContext, score_generator
from genforge.images import to_uint8
from genforge.metrics.extractors import get_extractor, reference


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--truncations", default="off,2,1.5,1,0.5")
    parser.add_argument("--n", type=int, default=1000, help="samples per class and truncation")
    parser.add_argument("--fd-n", type=int, default=10_000, help="samples per Frechet distance (0: none)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    device = torch.device("cpu")
    checkpoint = ckpt.load(args.run, kind=tuple(families.names()))
    spec = families.get(checkpoint.kind)
    model = spec.load(checkpoint, device)
    if not model.num_classes:
        raise SystemExit(f"genforge: error: {args.run}: not a class-conditional run")
    data_cfg = spec.data_config(checkpoint)
    extractor = get_extractor("classifier", data_cfg.source, device)
    truncations = [None if t == "off" else float(t) for t in args.truncations.split(",")]
    k = model.num_classes

    rows = [("real test images", real_class_accuracy(data_cfg.source, device)[1], None)]

    ref = reference(extractor, data_cfg) if args.fd_n else None
    for t in truncations:
        g = torch.Generator(device=device).manual_seed(args.seed)
        per_class = []
        for c in range(k):
            images = to_uint8(model.sample(args.n, g, truncation=t, class_label=c, tuned=False))
            per_class.append(float((extractor.class_probs(images).argmax(axis=1) == c).mean()))
        fd = None
        if ref is not None:
            model.use({"truncation": t})  # evaluate's draws, at this truncation
            ctx = EvalContext(extractor, ref, data_cfg, args.fd_n, args.seed, device)
            fd = score_generator(model, ctx)["fd"]
        rows.append((f"samples, truncation {'off' if t is None else f'{t:g}'}", per_class, fd))

    names = load_dataset(data_cfg.source, split="test").class_names or [str(c) for c in range(k)]
    print(f"# {machine()} | {args.run} | {args.n} samples per class and truncation, seed {args.seed}")
    print("| | " + " | ".join(names) + " | mean | worst | Frechet distance |")
    print("|---|" + "---|" * (k + 3))
    for name, per_class, fd in rows:
        cells = [f"{a:.1%}" for a in per_class] + [f"{np.mean(per_class):.1%}", f"**{min(per_class):.1%}**"]
        print(f"| {name} | " + " | ".join(cells) + f" | {'' if fd is None else f'{fd:.3f}'} |")


if __name__ == "__main__":
    main()
