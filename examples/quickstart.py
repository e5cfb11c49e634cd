"""
Quickstart: EBFlowDensity beside KernelDensity and GaussianMixture
==================================================================

The main job of the README. On scikit-learn's handwritten digits, projected to 15
principal components as in scikit-learn's KDE example, fit

* ``EBFlowDensity`` with its defaults,
* ``KernelDensity`` with its bandwidth tuned by ``GridSearchCV``,
* ``GaussianMixture`` with components and covariance type tuned by ``GridSearchCV``,

on the same 75 % of the rows, print each model's held-out mean log-likelihood on the
other 25 % (same PCA space, nats per row, higher is better) and the fit times, and write
a PNG of new digits drawn from each model.

Run ``python examples/quickstart.py [--output-dir DIR]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.mixture import GaussianMixture  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.neighbors import KernelDensity  # noqa: E402

from skebflow import EBFlowDensity  # noqa: E402


def main(output_dir: Path, max_iter: int = 200) -> dict[str, float]:
    digits = load_digits()
    X_train, X_test = train_test_split(digits.data, test_size=0.25, random_state=0)
    pca = PCA(n_components=15, whiten=False, random_state=0).fit(X_train)
    Z_train, Z_test = pca.transform(X_train), pca.transform(X_test)

    models = {
        "EBFlowDensity (defaults)": EBFlowDensity(random_state=0, max_iter=max_iter),
        "KernelDensity (GridSearchCV)": GridSearchCV(
            KernelDensity(), {"bandwidth": np.logspace(-1, 1, 20)}
        ),
        "GaussianMixture (GridSearchCV)": GridSearchCV(
            GaussianMixture(random_state=0, max_iter=200),
            {"n_components": [1, 2, 4, 8, 16], "covariance_type": ["full", "diag"]},
        ),
    }
    results: dict[str, float] = {}
    samples = {}
    print(
        f"digits: {Z_train.shape[0]} training and {Z_test.shape[0]} test rows,"
        " PCA to 15"
    )
    print(f"{'model':34s} {'held-out log-lik':>17s} {'fit time':>9s}")
    for name, model in models.items():
        start = time.perf_counter()
        model.fit(Z_train)
        seconds = time.perf_counter() - start
        best = model.best_estimator_ if isinstance(model, GridSearchCV) else model
        score = float(np.mean(best.score_samples(Z_test)))
        results[name] = score
        print(f"{name:34s} {score:17.2f} {seconds:8.1f}s")
        if isinstance(best, GaussianMixture):
            # GaussianMixture.sample returns (X, y), its draws grouped by component:
            # shuffled, so that the block does not show runs of the same digit
            drawn = best.sample(44)[0]
            samples[name] = drawn[np.random.RandomState(0).permutation(len(drawn))]
        else:
            samples[name] = best.sample(44, random_state=0)

    output_dir.mkdir(parents=True, exist_ok=True)
    rows = [("real digits", X_test[:44])] + [
        (name, pca.inverse_transform(drawn)) for name, drawn in samples.items()
    ]
    # One subfigure per block of 4 x 11 digits, each with its own title: constrained
    # layout then keeps every title clear of the digits of the block above.
    figure = plt.figure(figsize=(6.6, 11.0), layout="constrained")
    blocks = figure.subfigures(len(rows), 1, hspace=0.02)
    for block, (title, images) in zip(blocks, rows, strict=True):
        axes = block.subplots(4, 11, gridspec_kw={"wspace": 0.05, "hspace": 0.05})
        for index, axis in enumerate(axes.flat):
            axis.imshow(
                images[index].reshape(8, 8), cmap=plt.cm.binary, vmin=0, vmax=16
            )
            axis.set_xticks([])
            axis.set_yticks([])
        block.suptitle(title, x=0.02, ha="left", fontsize=9)
    figure.suptitle("Digits: real rows and new samples of each model", fontsize=10)
    path = output_dir / "quickstart_samples.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    print(f"samples written to {path}")
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description="Quickstart: EBFlowDensity beside KDE and GMM"
    )
    parser.add_argument("--output-dir", type=Path, default=Path("outputs"))
    parser.add_argument("--max-iter", type=int, default=200)
    arguments = parser.parse_args()
    main(arguments.output_dir, arguments.max_iter)
