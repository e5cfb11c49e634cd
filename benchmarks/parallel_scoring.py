"""Rows per second of skebflow.parallel scoring on a LocalCluster, and in one process.

A default :class:`~skebflow.EBFlowDensity` (logistic-mixture couplings) is fitted on
``make_classification(5000, 20, n_informative=10, random_state=0)`` for at most
``--max-iter`` epochs. It then scores ``--n-rows`` rows x 20 columns of standard
normal draws (``dask.array.random.default_rng(1)``, ``--chunk-rows`` rows per chunk),
two ways, in one run:

* one process: the rows in memory, ``est.score_samples`` chunk by chunk, torch on one
  thread;
* ``skebflow.parallel.score_samples(est, X).compute()`` on a
  ``LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`` started without
  dask's ``MALLOC_TRIM_THRESHOLD_`` (``--dask-default-malloc`` keeps it), the rows
  already in the workers' memory (``persist``), the result gathered on the client.

A warm-up of each way on the first ``--warmup-rows`` rows, then ``--repeats`` timed
runs of each on all the rows, alternating between the two ways so that both see the
same changes of the machine's load; the medians are reported. Both ways score the
same rows, and their log-densities are checked to be equal. Generating the rows is not
timed. The machine (CPU model, cores, torch version and threads), its load average
after each run and the busiest processes at the start are printed and saved.

Run ``python benchmarks/parallel_scoring.py`` (10 million rows; about half an hour
on 2 cores); results in ``benchmarks/results/parallel_scoring.{json,log}``.
``--n-rows 1000000 --output /tmp/parallel_scoring`` is a quick check.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import make_classification

from skebflow import EBFlowDensity

sys.path.insert(0, str(Path(__file__).resolve().parent))
from objective_cost import cpu_model  # noqa: E402

N_FEATURES = 20
RESULTS = Path(__file__).resolve().parent / "results" / "parallel_scoring"


class Log:
    """Print each line and append it to a log file as it comes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")

    def __call__(self, line: str) -> None:
        print(line, flush=True)
        with self.path.open("a") as handle:
            handle.write(line + "\n")


def read_text(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def uptime() -> str:
    try:
        return subprocess.run(
            ["uptime"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return f"load average {os.getloadavg()}"


def busy_processes() -> list[str]:
    """The five processes using the most CPU, with their nice value."""
    try:
        out = subprocess.run(
            ["ps", "-eo", "pcpu,ni,comm", "--sort=-pcpu"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return []
    return [line.strip() for line in out[1:6]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-rows", type=int, default=10_000_000)
    parser.add_argument("--chunk-rows", type=int, default=250_000)
    parser.add_argument("--warmup-rows", type=int, default=500_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-iter", type=int, default=20)
    parser.add_argument("--n-workers", type=int, default=2)
    parser.add_argument(
        "--dask-default-malloc",
        action="store_true",
        help="keep dask's MALLOC_TRIM_THRESHOLD_=65536 in the workers",
    )
    parser.add_argument(
        "--output", type=Path, default=RESULTS, help="prefix of the .json and .log"
    )
    args = parser.parse_args()

    import dask
    import dask.array as da
    import distributed
    from dask.distributed import Client, LocalCluster

    from skebflow.parallel import score_samples

    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    log = Log(args.output.with_suffix(".log"))
    machine = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "dask": dask.__version__,
        "distributed": distributed.__version__,
        # 1: the kernel shares the CPU between sessions first, then between their
        # processes: under load, more processes of one session gain little.
        "sched_autogroup": read_text("/proc/sys/kernel/sched_autogroup_enabled"),
    }
    log(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    log(f"machine: {json.dumps(machine)}")
    log(f"start: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {uptime()}")
    for line in busy_processes():
        log(f"  busy: {line}")

    X_train, _ = make_classification(5000, N_FEATURES, n_informative=10, random_state=0)
    start = time.perf_counter()
    est = EBFlowDensity(device="cpu", random_state=0, max_iter=args.max_iter).fit(
        X_train
    )
    log(
        f"fit: default EBFlowDensity on 5000 x {N_FEATURES}, {est.n_iter_} epochs,"
        f" {time.perf_counter() - start:.1f} s"
    )

    rows = da.random.default_rng(1).standard_normal(
        (args.n_rows, N_FEATURES), chunks=(args.chunk_rows, N_FEATURES)
    )
    warmup = min(args.warmup_rows, args.n_rows)

    # One process, torch on one thread, chunk by chunk.
    X = rows.compute(scheduler="synchronous")
    bounds = range(0, args.n_rows, args.chunk_rows)

    def score_in_process(stop: int = args.n_rows) -> np.ndarray:
        return np.concatenate(
            [
                est.score_samples(X[i : min(i + args.chunk_rows, stop)])
                for i in bounds
                if i < stop
            ]
        )

    # A LocalCluster of worker processes with one thread each. dask's Nanny starts
    # its workers with MALLOC_TRIM_THRESHOLD_=65536, which makes glibc unmap and map
    # again torch's temporary buffers (2 to 3 times the CPU time of scoring):
    # unset, as docs/user_guide/scaling_out.rst recommends.
    malloc_key = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
    if args.dask_default_malloc:
        malloc_setting = {}
    else:
        malloc_setting = {malloc_key: None}
    with (
        dask.config.set(malloc_setting),
        LocalCluster(
            n_workers=args.n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        worker_threads = client.run(torch.get_num_threads)
        worker_malloc = client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_")
        log(
            f"cluster: {args.n_workers} workers x 1 thread, torch threads in"
            f" workers {sorted(worker_threads.values())}, MALLOC_TRIM_THRESHOLD_"
            f" {sorted(map(str, worker_malloc.values()))}; {uptime()}"
        )
        X_dask = rows.persist()
        distributed.wait(X_dask)

        def score_on_cluster(stop: int = args.n_rows) -> np.ndarray:
            return score_samples(est, X_dask[:stop]).compute()

        # Warm-ups, then the timed runs, alternating between the two ways so that
        # both see the same changes of the machine's load.
        score_in_process(warmup)
        score_on_cluster(warmup)
        log(f"warm-ups done; {uptime()}")

        def cpu_seconds() -> float:
            """CPU time of this process and of the workers' processes."""
            workers = client.run(time.process_time)
            return time.process_time() + sum(workers.values())

        single_seconds: list[float] = []
        cluster_seconds: list[float] = []
        cpu = {"one process": [], "cluster": []}
        for index in range(args.repeats):
            for label, run, seconds in (
                ("one process", score_in_process, single_seconds),
                ("cluster", score_on_cluster, cluster_seconds),
            ):
                cpu_start = cpu_seconds()
                start = time.perf_counter()
                result = run()
                seconds.append(time.perf_counter() - start)
                cpu[label].append(cpu_seconds() - cpu_start)
                log(
                    f"{label}: run {index + 1}, {seconds[-1]:.2f} s,"
                    f" {args.n_rows / seconds[-1]:,.0f} rows/s, CPU"
                    f" {cpu[label][-1]:.1f} s ({args.n_rows / cpu[label][-1]:,.0f}"
                    f" rows per CPU-second); {uptime()}"
                )
                if label == "cluster":
                    got = result
                else:
                    expected = result
    equal = bool(np.array_equal(got, expected))
    log(f"cluster log-densities equal to one process's: {equal}")

    single = args.n_rows / statistics.median(single_seconds)
    parallel = args.n_rows / statistics.median(cluster_seconds)
    log(
        f"rows/s (median of {args.repeats}): one process {single:,.0f},"
        f" cluster {parallel:,.0f}, speed-up {parallel / single:.2f}x"
    )
    cpu_rate = {
        label: args.n_rows / statistics.median(values) for label, values in cpu.items()
    }
    log(
        "rows per CPU-second (median): one process"
        f" {cpu_rate['one process']:,.0f}, cluster {cpu_rate['cluster']:,.0f}"
    )
    log(f"end: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {uptime()}")
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": machine,
        "n_rows": args.n_rows,
        "n_features": N_FEATURES,
        "chunk_rows": args.chunk_rows,
        "fit_epochs": est.n_iter_,
        "repeats": args.repeats,
        "one_process": {
            "seconds": single_seconds,
            "rows_per_second": single,
            "cpu_seconds": cpu["one process"],
            "rows_per_cpu_second": cpu_rate["one process"],
        },
        "cluster": {
            "n_workers": args.n_workers,
            "threads_per_worker": 1,
            "MALLOC_TRIM_THRESHOLD_": "dask default (65536)"
            if args.dask_default_malloc
            else "unset",
            "seconds": cluster_seconds,
            "rows_per_second": parallel,
            "cpu_seconds": cpu["cluster"],
            "rows_per_cpu_second": cpu_rate["cluster"],
        },
        "speedup": parallel / single,
        "results_equal": equal,
        "load_at_end": os.getloadavg(),
    }
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
