"""The gallery example's 2-D fits over several seeds, with a setting varied.

``examples/plot_2d_densities.py`` draws each objective's density at one seed (its
``random_state=0``), at a budget of a few minutes. Whether a change of setting
helps there cannot be read from that one seed. This script runs the example's data
and estimators (its ``make_model``, executed from the example's own source, so the
settings cannot drift apart) for one objective over ``--seeds`` and prints the KL
divergence to the true density per data set and seed, with each ``--set
name=value`` applied on top of the example's settings.

Run (about 2 minutes per seed for ``fdssm``, one thread)::

    OMP_NUM_THREADS=1 python benchmarks/paper/toy2d_gallery.py --objective fdssm \\
        --seeds 0 1 2
    OMP_NUM_THREADS=1 python benchmarks/paper/toy2d_gallery.py --objective fdssm \\
        --seeds 0 1 2 --set n_slices=2

Each run writes its rows into ``results/toy2d_gallery.csv``, replacing those of an
earlier run of the same objective, settings, data set and seed.
"""

from __future__ import annotations

import argparse
import ast
import csv
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _machine import machine_line  # noqa: E402

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parents[1] / "examples" / "plot_2d_densities.py"
RESULTS = HERE.parent / "results" / "toy2d_gallery.csv"
# The example's cells up to its fitting loop: data, true density, make_model.
STOP = "models, seconds = {}, {}\n"


def example_namespace() -> dict:
    """The example's data, ``true_log_density`` and ``make_model``."""
    source = EXAMPLE.read_text()
    namespace: dict = {"__name__": "gallery"}
    exec(compile(source[: source.index(STOP)], str(EXAMPLE), "exec"), namespace)
    return namespace


def parse_settings(pairs: list[str]) -> dict:
    """``["n_slices=2"]`` -> ``{"n_slices": 2}`` (values as Python literals)."""
    settings = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        settings[name] = ast.literal_eval(value)
    return settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objective", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--set", nargs="*", default=[], dest="settings")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    settings = parse_settings(args.settings)
    label = ",".join(args.settings) or "example"
    print(machine_line(f"{args.objective}, {label}"), flush=True)
    namespace = example_namespace()
    rows = []
    for name, (X_train, X_test, centres) in namespace["data"].items():
        log_p = namespace["true_log_density"](X_test, centres)
        for seed in args.seeds:
            start = time.perf_counter()
            model = namespace["make_model"](args.objective, seed, **settings)
            model.fit(X_train)
            seconds = time.perf_counter() - start
            kl = float(np.mean(log_p - model.score_samples(X_test)))
            rows.append(
                [args.objective, label, name, seed, f"{kl:.4f}", f"{seconds:.1f}"]
            )
            print(f"{name:13s} seed {seed}: KL {kl:.3f}, {seconds:.1f} s", flush=True)
    # A rerun replaces its earlier rows (same objective, settings, data set, seed).
    header = ["objective", "settings", "dataset", "seed", "kl", "seconds"]
    kept = []
    if RESULTS.exists():
        with RESULTS.open(newline="") as handle:
            new_keys = {tuple(map(str, row[:4])) for row in rows}
            kept = [
                row
                for row in list(csv.reader(handle))[1:]
                if tuple(row[:4]) not in new_keys
            ]
    with RESULTS.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(kept + rows)
    kls = [float(row[4]) for row in rows]
    print(
        f"mean KL {np.mean(kls):.3f}, median {np.median(kls):.3f}, worst {max(kls):.3f}"
    )


if __name__ == "__main__":
    main()
