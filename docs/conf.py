"""Sphinx configuration of the gsg-zoo documentation (Sphinx + MyST; ``make docs``).

Sphinx rather than mkdocs: the package's docstrings are written with reST roles (``:func:``,
``:class:``), which autodoc renders as cross-references; MyST lets every page stay markdown.
Generated reference tables (recipes, recipe keys, datasets, architecture) are written by
``_ext/gsg_docs.py`` into ``_generated/`` when the build starts, so they cannot drift from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # the checkout's gsg_zoo
sys.path.insert(0, str(DOCS / "_ext"))

project = "gsg-zoo"
author = "gsg-zoo developers"
copyright = "2026, gsg-zoo developers"
release = version = "0.1.0"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinxarg.ext",
    "gsg_docs",
]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # links to headings (#anchor) are checked: a broken one is a warning
suppress_warnings = ["myst.xref_ambiguous"]
smartquotes = False  # "--set" stays two hyphens in the CLI reference and the prose
exclude_patterns = ["_build", "results/tables/*.md", "_generated/*.md"]  # included by other pages
autodoc_default_options = {"members": True, "undoc-members": False, "show-inheritance": False}
autodoc_typehints = "description"
autodoc_member_order = "bysource"
html_theme = "furo"
html_title = "gsg-zoo"
html_static_path = []
