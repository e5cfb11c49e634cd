"""Sphinx-Gallery helpers for the skebflow docs (named by string in ``conf.py``).

Sphinx caches its configuration with pickle; callables defined inside ``conf.py``
cannot be pickled, so the ones the gallery needs live in this importable module and
``conf.py`` refers to them by their qualified name.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path
from typing import Any

from sphinx_gallery.scrapers import figure_rst

# Examples shown first, in this order; any other example follows, by file name.
EXAMPLE_ORDER = (
    "quickstart.py",
    "plot_2d_densities.py",
    "digits_sampling.py",
    "plot_image_rows.py",
    "plot_grid_search.py",
    "anomaly_detection.py",
)

_BUILD_START = time.time()
_collected: set[tuple[str, float]] = set()


def example_order(filename: str) -> tuple[int, str]:
    """Sort key of the gallery: the examples of ``EXAMPLE_ORDER`` first."""
    name = Path(filename).name
    rank = EXAMPLE_ORDER.index(name) if name in EXAMPLE_ORDER else len(EXAMPLE_ORDER)
    return rank, name


def png_scraper(block: Any, block_vars: dict[str, Any], gallery_conf: dict) -> str:
    """Show the PNG files an example writes (examples that save and close figures).

    Sphinx-Gallery's matplotlib scraper shows figures still open at the end of a
    code block; an example that saves its figure to a file and closes it (a script
    meant for the command line, such as ``quickstart.py``) would show nothing. This
    scraper, which runs before the matplotlib one, takes every PNG written below the
    example's folder since the build started out of the source tree. It shows them
    only when no figure is left open: an example that both saves a figure and leaves
    it open gets it shown once, by the matplotlib scraper.
    """
    folder = Path(block_vars["src_file"]).parent
    new = []
    for path in sorted(folder.rglob("*.png")):
        stamp = path.stat().st_mtime
        if stamp >= _BUILD_START and (str(path), stamp) not in _collected:
            _collected.add((str(path), stamp))
            new.append(path)
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None and pyplot.get_fignums():
        for path in new:
            path.unlink()
        return ""
    image_names = []
    for path in new:
        target = block_vars["image_path_iterator"].next()
        shutil.move(path, target)
        image_names.append(target)
    return figure_rst(image_names, gallery_conf["src_dir"])
