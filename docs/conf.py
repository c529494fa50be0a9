"""Sphinx configuration of the skfalcon documentation.

Build with ``bash scripts/docs.sh`` (warnings are errors), or
``sphinx-build -W --keep-going -b html docs docs/_build/html``.
"""

import skfalcon

project = "skfalcon"
author = "the skfalcon developers"
copyright = "the skfalcon developers"  # noqa: A001 - Sphinx's name for it
version = release = skfalcon.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py"]
templates_path = []
html_static_path = ["_static"]
html_theme = "alabaster"
html_theme_options = {
    "description": "Simulation-based inference as a scikit-learn estimator",
    "fixed_sidebar": True,
    "page_width": "1100px",
    "sidebar_width": "230px",
}
html_sidebars = {"**": ["about.html", "navigation.html", "searchbox.html"]}

# autodoc: document members in source order, keep signatures readable
autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the numpydoc sections carry the types
autodoc_default_options = {"members": True}

# numpydoc renders the Parameters/Returns sections; the class pages list the methods
# through autodoc, so numpydoc's own member tables (which need autosummary) stay off.
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False


# The gallery: every script of examples/gallery runs at build time, its output and
# figures embedded in its page. Small networks train fastest on one torch thread.
sphinx_gallery_conf = {
    "examples_dirs": "../examples/gallery",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "image_scrapers": ("matplotlib",),
    "matplotlib_animations": False,
    "abort_on_example_error": True,
    "remove_config_comments": True,
    "download_all_examples": False,
}
