"""
New digits from an energy-based flow and from a kernel density
===============================================================

scikit-learn's example *Kernel Density Estimation* (``plot_digits_kde_sampling.py``)
projects the 8 x 8 digits on 15 principal components, picks a Gaussian kernel's
bandwidth by ``GridSearchCV`` and draws 44 "new" digits from the kernel density. This
example does the same with :class:`~skebflow.EBFlowDensity` beside
:class:`~sklearn.neighbors.KernelDensity`, and measures three things:

* the held-out mean log-likelihood of both models, in the same PCA space and on the
  same cross-validation folds;
* how close the samples of each model lie to their nearest training digit (a kernel
  density sample is a training digit plus Gaussian noise, so a small distance means
  memorization; the distance of the held-out digits to the training digits is the
  reference);
* the same comparison in pixel space, without PCA: the 61 non-constant pixels are
  integers in 0..16, which both models see dequantized (``x + u``, ``u ~ U[0, 1)``);
  the flow uses a logit map of the box ``[0, 17]`` as its preprocessing (MaP).

The settings are small so that the whole example runs in about two minutes on one
CPU core.
"""

# %%
# Data and the PCA space
# ----------------------
# As in scikit-learn's example: 1797 digits, PCA to 15 dimensions fitted on all of
# them (every model below shares this one projection, so their log-likelihoods are
# densities in the same 15-D space).

import argparse
import os
import time
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import (
    GridSearchCV,
    KFold,
    cross_validate,
    train_test_split,
)
from sklearn.neighbors import KernelDensity, NearestNeighbors

from skebflow import EBFlowDensity

warnings.simplefilter("ignore", ConvergenceWarning)

# SKEBFLOW_EXAMPLE_QUICK=1 (set by the test suite) shrinks training to a smoke test.
QUICK = os.environ.get("SKEBFLOW_EXAMPLE_QUICK") == "1"
MAX_ITER = 3 if QUICK else 80

parser = argparse.ArgumentParser(description="EBFlow and KDE digits")
parser.add_argument("--output-dir", type=Path, default=Path("outputs"))
args, _ = parser.parse_known_args()
args.output_dir.mkdir(parents=True, exist_ok=True)

digits = load_digits()
pca = PCA(n_components=15, whiten=False)
data = pca.fit_transform(digits.data)
folds = KFold(n_splits=5)  # GridSearchCV's default: 5 folds, no shuffling

# %%
# Kernel density: bandwidth by cross-validation
# ---------------------------------------------
# The grid of scikit-learn's example. ``KernelDensity.score`` is the *total*
# log-likelihood of a fold; dividing by the fold's size gives the mean per digit.

start = time.perf_counter()
kde_search = GridSearchCV(
    KernelDensity(), {"bandwidth": np.logspace(-1, 1, 20)}, cv=folds
)
kde_search.fit(data)
kde_seconds = time.perf_counter() - start
fold_sizes = np.array([len(test) for _, test in folds.split(data)])


def per_row_scores(search, total):
    """Held-out mean log-likelihood per digit of each fold, for the best candidate."""
    best = search.best_index_
    results = search.cv_results_
    n_folds = len(fold_sizes)
    scores = np.array([results[f"split{k}_test_score"][best] for k in range(n_folds)])
    return scores / fold_sizes if total else scores


kde_folds = per_row_scores(kde_search, total=True)
kde = kde_search.best_estimator_
print(f"KDE: best bandwidth {kde.bandwidth:.3f} ({kde_seconds:.1f} s)")

# %%
# Energy-based flow on the same folds
# -----------------------------------
# ``EBFlowDensity.score`` is already a mean per row. The flow standardizes internally
# and adds the log-Jacobian back, so its densities are in the same PCA units as the
# kernel density's. One configuration, chosen beforehand by the same 5-fold
# cross-validation, as GridSearchCV chooses the kernel's bandwidth: 12 coupling
# blocks and Gaussian ``jitter`` of 0.25 standardized units added to every training
# batch (the flow's counterpart of a bandwidth: it smooths the 1437 training digits).
# Of the grid tried (jitter 0, 0.1, 0.2, 0.25, 0.3; 4, 8 or 12 blocks) 8 blocks scored
# -47.83 without jitter, -47.36 with 0.1 and -46.68 with 0.2, 4 blocks about -47.4,
# and 12 blocks -46.47 with 0.2 and -46.38 with 0.25. Batches of 128, a learning rate
# of 3e-3 and at most 80 epochs. ``cross_validate`` keeps the five fitted flows.

# One flow of affine couplings without weight decay, on standardized columns: the
# defaults when this grid was chosen and its figures measured (the defaults are now
# a mixture of four flows of logistic-mixture couplings on kernel marginals below
# 5 000 rows, which the grid was not chosen for, at about four times the time).
FLOW = {
    "coupling_transform": "affine",
    "weight_decay": 0.0,
    "n_flows": 1,
    "marginal_transform": None,
    "n_layers": 12,
    "jitter": 0.25,
    "batch_size": 128,
    "learning_rate": 3e-3,
    "max_iter": MAX_ITER,
    "device": "cpu",
    "random_state": 0,
}
start = time.perf_counter()
flow_cv = cross_validate(EBFlowDensity(**FLOW), data, cv=folds, return_estimator=True)
flow_seconds = time.perf_counter() - start
flow_folds = flow_cv["test_score"]
flow = EBFlowDensity(**FLOW).fit(data)  # refit on every digit, as GridSearchCV does
print(f"EBFlow: 5 fits in {flow_seconds:.1f} s")

print("\nHeld-out mean log-likelihood per digit in the 15-D PCA space (5 folds):")
for name, scores in (("KDE", kde_folds), ("EBFlow", flow_folds)):
    mean, std = scores.mean(), scores.std()
    print(f"  {name:6s} {mean:8.2f} ± {std:.2f}, by fold {scores.round(2)}")

# %%
# Memorization check
# ------------------
# Take both models fitted on the training rows of the first fold, draw 500 digits
# from each and measure each one's distance to its nearest training digit (in the PCA
# space, where it equals the pixel distance between the reconstructions). The
# held-out digits of that fold give the distance a genuinely new digit has.

train_index, test_index = next(folds.split(data))
kde_fold = clone(kde).fit(data[train_index])
flow_fold = flow_cv["estimator"][0]
n_check = 50 if QUICK else 500


def nearest_training_distances(train, points, where):
    """Print and return each group's distances to its nearest training row."""
    neighbours = NearestNeighbors(n_neighbors=1).fit(train)
    distances = {name: neighbours.kneighbors(x)[0][:, 0] for name, x in points.items()}
    print(f"\nDistance to the nearest training digit ({where}), median [10 %, 90 %]:")
    for name, values in distances.items():
        low, median, high = np.percentile(values, [10, 50, 90])
        print(f"  {name:16s} {median:6.2f} [{low:5.2f}, {high:5.2f}]")
    return distances


distances = nearest_training_distances(
    data[train_index],
    {
        "held-out digits": data[test_index],
        "KDE samples": kde_fold.sample(n_check, random_state=1),
        "EBFlow samples": flow_fold.sample(n_check, random_state=1),
    },
    "PCA space",
)

# %%
# 44 new digits from each model
# -----------------------------
# As in scikit-learn's example: 44 draws with ``random_state=0``, mapped back to
# pixels by the inverse PCA.

real = digits.data[:44]
kde_digits = pca.inverse_transform(kde.sample(44, random_state=0))
flow_digits = pca.inverse_transform(flow.sample(44, random_state=0))


def show(rows, titles, path):
    fig = plt.figure(figsize=(8, 3.3 * len(rows)))
    panels = fig.subfigures(len(rows), 1)
    for panel, images, title in zip(panels, rows, titles, strict=True):
        axes = panel.subplots(4, 11, gridspec_kw={"wspace": 0.05, "hspace": 0.05})
        for ax, image in zip(axes.ravel(), images, strict=True):
            ax.imshow(
                image.reshape(8, 8), cmap=plt.cm.binary, interpolation="nearest"
            ).set_clim(0, 16)
            ax.set_axis_off()
        panel.suptitle(title, fontsize=11)
    fig.savefig(path, dpi=100)
    print(f"figure: {path}")
    return fig


show(
    [real, kde_digits, flow_digits],
    [
        "Selection from the input data",
        f'"New" digits from the kernel density (PCA-15, bandwidth {kde.bandwidth:.2f})',
        '"New" digits from EBFlowDensity (PCA-15)',
    ],
    args.output_dir / "digits_sampling_pca.png",
)

# %%
# Pixel space: dequantization and a logit preprocessing
# -----------------------------------------------------
# Without PCA the data are 64 integer pixels in 0..16, three of which are always 0
# (dropped). A continuous density needs dequantization: both models see ``x + u`` with
# ``u ~ U[0, 1)``: the flow draws fresh ``u`` every epoch (``dequantize=True``), the
# kernel density is fitted on one draw. The flow's preprocessing maps the box
# ``[0, 17]`` to the real line by a logit (its log-Jacobian is added back, so densities
# stay in pixel units). Both are scored at the centres of the test digits' unit bins,
# ``x + 1/2``, a density per unit pixel-volume. One 80/20 split.

keep = np.ptp(digits.data, axis=0) > 0
pixels = digits.data[:, keep]
X_train, X_test = train_test_split(pixels, test_size=0.2, random_state=0)
rng = np.random.RandomState(0)

start = time.perf_counter()
kde_pixels = GridSearchCV(
    KernelDensity(), {"bandwidth": np.logspace(-0.3, 0.7, 11)}, cv=3
).fit(X_train + rng.uniform(size=X_train.shape))
kde_pixel_seconds = time.perf_counter() - start

start = time.perf_counter()
flow_pixels = EBFlowDensity(
    coupling_transform="affine",  # one flow of affine couplings, as above
    weight_decay=0.0,
    n_flows=1,
    preprocessing="logit",
    bounds=(0, 17),
    dequantize=True,
    hidden_layer_sizes=(32, 32),
    learning_rate=3e-3,
    max_iter=3 if QUICK else 60,
    device="cpu",
    random_state=0,
).fit(X_train)
flow_pixel_seconds = time.perf_counter() - start

kde_pixel_loglik = kde_pixels.best_estimator_.score_samples(X_test + 0.5).mean()
flow_pixel_loglik = flow_pixels.score_samples(X_test).mean()  # bin centres
n_pixels = pixels.shape[1]
print(f"\nPixel space ({n_pixels} pixels), test mean log-likelihood per digit:")
print(
    f"  KDE    {kde_pixel_loglik:8.2f} ({kde_pixel_loglik / n_pixels:.3f} per pixel;"
    f" bandwidth {kde_pixels.best_params_['bandwidth']:.2f},"
    f" {kde_pixel_seconds:.1f} s)"
)
print(
    f"  EBFlow {flow_pixel_loglik:8.2f} ({flow_pixel_loglik / n_pixels:.3f} per pixel;"
    f" {flow_pixels.n_iter_} epochs, {flow_pixel_seconds:.1f} s)"
)

# %%
# Samples in pixel space and their nearest training digits. The flow's samples are
# integer images (the dequantization is inverted by flooring); the kernel density's
# are clipped to the box and floored the same way.

kde_pixel_samples = np.floor(
    np.clip(kde_pixels.best_estimator_.sample(n_check, random_state=1), 0, 16.999)
)
flow_pixel_samples = flow_pixels.sample(n_check, random_state=1)
pixel_distances = nearest_training_distances(
    X_train,
    {
        "held-out digits": X_test,
        "KDE samples": kde_pixel_samples,
        "EBFlow samples": flow_pixel_samples,
    },
    "pixels",
)


def full_image(rows):
    images = np.zeros((rows.shape[0], 64))
    images[:, keep] = rows
    return images


show(
    [
        full_image(X_test[:44]),
        full_image(kde_pixel_samples[:44]),
        full_image(flow_pixel_samples[:44]),
    ],
    [
        "Held-out digits",
        "Kernel density samples (dequantized pixels)",
        "EBFlowDensity samples (pixels, logit MaP, dequantization)",
    ],
    args.output_dir / "digits_sampling_pixels.png",
)

# %%
# What to read from it
# --------------------
# In the PCA space the flow's held-out likelihood is level with the tuned kernel
# density's (-46.38 ± 0.31 against -46.53 ± 0.40 per digit over the five folds, on
# 5 December 2026), and neither model's samples copy training digits: the median
# distance to the nearest training digit is 14.0 for the kernel density's samples,
# 16.5 for the flow's and 12.4 for held-out digits (there the kernel's bandwidth of
# 3.8 adds noise as large as the gaps between digits). In pixel space the contrast is
# sharper. The flow's density is far higher (about -96 against -137 nats per digit),
# while the kernel density's samples lie closer to a training digit (12.7) than
# held-out digits do (16.6): a draw from a narrow kernel is a training digit plus a
# little noise. The flow's pixel samples lie farther (27.4): new images, but noisy
# ones (the figure), from 60 epochs on 1 437 digits of 61 pixels.
