"""Training on a dask array larger than one chunk: dask-ml ``Incremental`` on a cluster.

A dask array of ``--rows`` x 20 (default 2 million) in chunks of ``--chunk`` rows
(default 100 000) is generated lazily on the workers, block by block (a correlated
Gaussian with one log-normal column, a fixed seed per block), so no process ever
holds all of it. dask-ml's ``Incremental`` then calls ``EBFlowDensity.partial_fit``
once per block (one epoch over the block), on a ``LocalCluster`` of 2 worker
processes with one thread each. The reference is an in-memory ``fit`` at the
defaults on a ``--subsample``-row sample (default 200 000) of the same distribution.
Both are scored on 50 000 held-out rows.

Printed: the peak resident memory of the client process and of each worker (the
``ru_maxrss`` of each process: the high-water mark of its whole life), the held-out
log-likelihood per dimension of both models and their difference, and the times.

Run ``python benchmarks/incremental_memory.py`` (12 minutes on this CPU when measured).
"""

from __future__ import annotations

import argparse
import platform
import resource
import time
import warnings

import numpy as np

N_FEATURES = 20


def block(seed: int, n_rows: int) -> np.ndarray:
    """``n_rows`` rows of the benchmark's distribution, drawn with ``seed``."""
    mixing = np.random.RandomState(12345).normal(size=(N_FEATURES, N_FEATURES))
    mixing /= np.sqrt(N_FEATURES)
    rows = np.random.RandomState(seed).normal(size=(n_rows, N_FEATURES)) @ mixing
    rows[:, 0] = np.exp(0.5 * rows[:, 0])
    return rows


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--chunk", type=int, default=100_000)
    parser.add_argument("--subsample", type=int, default=200_000)
    parser.add_argument("--test-rows", type=int, default=50_000)
    args = parser.parse_args()

    import dask
    import dask.array as da
    import torch
    from dask.distributed import Client, LocalCluster
    from dask_ml.wrappers import Incremental

    from skebflow import EBFlowDensity

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    print(
        f"machine: {platform.processor() or platform.machine()}, torch"
        f" {torch.__version__}, dask {dask.__version__}; {args.rows} x {N_FEATURES}"
        f" in chunks of {args.chunk}, subsample {args.subsample}",
        flush=True,
    )
    # full chunks, and the remainder as a last, smaller one: every row is trained on
    sizes = [args.chunk] * (args.rows // args.chunk)
    if args.rows % args.chunk:
        sizes.append(args.rows % args.chunk)
    blocks = [
        da.from_delayed(
            dask.delayed(block)(1000 + index, size),
            shape=(size, N_FEATURES),
            dtype=np.float64,
        )
        for index, size in enumerate(sizes)
    ]
    X = da.concatenate(blocks, axis=0)
    test = block(7, args.test_rows)

    with dask.config.set(
        {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
    ):
        cluster = LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=40,
        )
    with cluster, Client(cluster) as client:
        started = time.perf_counter()
        incremental = Incremental(
            EBFlowDensity(random_state=0, device="cpu"), shuffle_blocks=False
        ).fit(X)
        incremental_seconds = time.perf_counter() - started
        worker_peaks = client.run(peak_rss_mb)
    model = incremental.estimator_
    incremental_score = float(np.mean(model.score_samples(test))) / N_FEATURES
    client_peak = peak_rss_mb()
    print(
        f"Incremental: {model.n_iter_} partial_fit calls in"
        f" {incremental_seconds:.0f} s; held-out {incremental_score:.4f} nats/dim",
        flush=True,
    )
    print(f"peak RSS of the client process: {client_peak:.0f} MB")
    for address, peak in sorted(worker_peaks.items()):
        print(f"peak RSS of worker {address}: {peak:.0f} MB")

    started = time.perf_counter()
    reference = EBFlowDensity(random_state=0, device="cpu").fit(
        block(99, args.subsample)
    )
    reference_seconds = time.perf_counter() - started
    reference_score = float(np.mean(reference.score_samples(test))) / N_FEATURES
    print(
        f"in-memory fit on {args.subsample} rows: {reference.n_iter_} epochs in"
        f" {reference_seconds:.0f} s; held-out {reference_score:.4f} nats/dim"
    )
    print(
        f"difference (Incremental - in-memory): "
        f"{incremental_score - reference_score:+.4f} nats/dim"
    )


if __name__ == "__main__":
    main()
