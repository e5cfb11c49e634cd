"""Sphinx configuration of the skebflow documentation.

Build with ``make docs`` (runs the gallery) or ``make docs-noplot`` (does not), both
with warnings as errors.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from datetime import date
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

import skebflow  # noqa: E402

# -- Project -------------------------------------------------------------------------

project = "skebflow"
author = "The skebflow developers"
copyright = f"{date.today().year}, {author}"
release = skebflow.__version__
version = release

# -- General -------------------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "sphinx_design",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = [
    "_build",
    "_ext",
    "_templates",
    "Thumbs.db",
    ".DS_Store",
    "auto_examples/*.ipynb",
    "auto_examples/*.py",
    "auto_examples/*.zip",
    "auto_examples/*.md5",
    "auto_examples/*.json",
]
templates_path = ["_templates"]
default_role = "literal"
pygments_style = "sphinx"
nitpicky = False

# -- autodoc / autosummary / numpydoc ------------------------------------------------

autosummary_generate = True
autosummary_imported_members = False
autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
autodoc_member_order = "bysource"

numpydoc_show_class_members = False  # autosummary templates list the members
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False
# Every docstring rendered on the API pages is validated; a failing check is a
# warning, and so an error of the -W build. GL08: it has a docstring; PR01, PR02,
# PR03, PR10: its Parameters section lists the parameters of the signature, in order,
# well formatted; SS03: its summary ends with a period.
numpydoc_validation_checks = {"GL08", "PR01", "PR02", "PR03", "PR10", "SS03"}
numpydoc_validation_exclude = {
    # A base class, a protocol and a named tuple: no constructor parameters to list
    # (Jet documents its fields as Attributes).
    r"^skebflow\.flows\.(Bijection|Jet)$",
    r"^skebflow\.objectives\.Objective$",
    # Layers override the methods of Bijection and show its docstrings.
    r"^skebflow\.flows\.(?!Bijection\.|Flow\.)\w+\.(forward|inverse|jet|log_abs_det)$",
}


def _skip_foreign_members(app, what, name, obj, skip, options):
    """Document the members skebflow defines, inherited ones included (the density
    methods of EBFlowOutlierDetector), but not those of torch's ``nn.Module``,
    scikit-learn's mixins or ``tuple`` (the fields of a ``NamedTuple`` are listed in
    its Attributes section)."""
    if what != "class":
        return None
    source = obj.fget if isinstance(obj, property) else obj
    module = getattr(source, "__module__", None)
    if not (isinstance(module, str) and module.startswith("skebflow")):
        return True
    if name == "extra_repr":  # torch's repr hook
        return True
    return None


def _bijection_signature(app, what, name, obj, options, signature, return_annotation):
    """``Bijection()`` rather than the ``(*args, **kwargs)`` of ``nn.Module``: the
    base layer takes no arguments."""
    if name == "skebflow.flows.Bijection":
        return "()", return_annotation
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_foreign_members)
    app.connect("autodoc-process-signature", _bijection_signature)


# -- MyST (docs/method.md and docs/benchmarks.md) -----------------------------------

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_dmath_double_inline = True
myst_heading_anchors = 3

# -- HTML ----------------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"skebflow {release}"
html_static_path = ["_static"]
html_css_files = ["skebflow.css"]
html_theme_options = {
    "navbar_align": "left",
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "secondary_sidebar_items": ["page-toc", "sourcelink"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
# Pages without sub-pages get no primary sidebar (it would hold an empty "Section
# Navigation"); the API pages get the theme's navigation in a smaller font.
html_sidebars = {
    "index": [],
    "getting_started": [],
    "benchmarks": [],
    "method": [],
    "api": ["sidebar-collapse", "api-sidebar-nav"],
    "generated/*": ["sidebar-collapse", "api-sidebar-nav"],
}
# "fit()" rather than "EBFlowDensity.fit()" in the "On this page" table of contents.
toc_object_entries_show_parents = "hide"
html_show_sourcelink = True
html_last_updated_fmt = None
# Math is rendered by MathJax 3 from _static/mathjax, copied there from the
# sphinx-mathjax-offline package of the docs extra (MathJax 3.2.2), so that the pages
# render offline; without that package, from Sphinx's default CDN.
# SKEBFLOW_MATHJAX_PATH overrides both (for example Debian's libjs-mathjax).
_OFFLINE_MATHJAX = importlib.util.find_spec("sphinx-mathjax-offline")
if os.environ.get("SKEBFLOW_MATHJAX_PATH"):
    mathjax_path = os.environ["SKEBFLOW_MATHJAX_PATH"]
    if mathjax_path.split("?")[0].endswith("MathJax.js"):  # MathJax 2
        mathjax2_config = {
            "tex2jax": {
                "inlineMath": [["\\(", "\\)"]],
                "displayMath": [["\\[", "\\]"]],
                "processEscapes": True,
                "processClass": "math|output_area",
                "ignoreClass": "document",
            }
        }
elif _OFFLINE_MATHJAX is not None and _OFFLINE_MATHJAX.submodule_search_locations:
    html_static_path.append(  # its static/ holds mathjax/
        str(Path(list(_OFFLINE_MATHJAX.submodule_search_locations)[0]) / "static")
    )
    mathjax_path = "mathjax/tex-mml-chtml.js"  # Sphinx's default component

# -- Sphinx-Gallery ------------------------------------------------------------------

sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    # Every example runs (not only plot_*.py); ``-D plot_gallery=0`` skips them all.
    "filename_pattern": r"\.py$",
    "ignore_pattern": r"^_|__init__\.py",
    "within_subsection_order": "skebflow_gallery.example_order",
    # PNG files written by an example that saves and closes its figures (a
    # command-line script such as quickstart.py), and figures left open.
    "image_scrapers": ("skebflow_gallery.png_scraper", "matplotlib"),
    "doc_module": ("skebflow",),
    "backreferences_dir": "gen_modules/backreferences",
    "reference_url": {"skebflow": None},
    "remove_config_comments": True,
    "download_all_examples": False,
    "min_reported_time": 1,
    "show_memory": False,
    "capture_repr": ("_repr_html_", "__repr__"),
    "abort_on_example_error": False,
    "only_warn_on_example_error": False,
}
