"""Run every Python code block of the documentation, so that the docs cannot rot.

Each page of ``docs/`` (``.rst``) and the ``README.md`` is one program: its Python blocks
(``.. code-block:: python``, ``.. code:: python``, ``.. sourcecode:: python`` and
```` ```python ```` fences) run in order, in one fresh namespace, in a subprocess of their
own. A renamed function or argument in the package therefore fails here. Blocks in other
languages (``bash``, ``text``) and plain ``::`` literal blocks are not run.

A block that cannot run anywhere (it needs a cluster, a GPU or a package outside the test
extras) is preceded by the comment ``.. docs-test: skip`` (reST) or
``<!-- docs-test: skip -->`` (Markdown), which readers do not see. Anything else a block
needs is defined by an earlier, visible block of the same page.

The blocks check that the code runs, not how well it fits: training is capped at
``MAX_EPOCHS`` epochs (every ``FlowPosteriorEstimator`` is built with at most that many),
and torch runs on one thread.
"""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_EPOCHS = 2
TIMEOUT = 300  # seconds per page
SKIP_MARK = "docs-test: skip"

_RST_DIRECTIVE = re.compile(
    r"^(?P<indent>\s*)\.\. (?:code-block|code|sourcecode)::\s*(?P<lang>\S*)\s*$"
)
_MD_FENCE = re.compile(r"^(?P<indent>\s*)```\s*(?P<lang>[\w+-]*)\s*$")


def _previous_line(lines: list[str], index: int) -> str:
    """The last non-blank line before ``lines[index]``."""
    for line in reversed(lines[:index]):
        if line.strip():
            return line.strip()
    return ""


def rst_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of each Python code block of a reST page, skips left out."""
    lines = text.splitlines()
    blocks = []
    for i, line in enumerate(lines):
        match = _RST_DIRECTIVE.match(line)
        if not match or match["lang"] not in ("python", "py", "python3"):
            continue
        if SKIP_MARK in _previous_line(lines, i):
            continue
        indent = len(match["indent"])
        j = i + 1
        while j < len(lines) and re.match(r"^\s+:[\w-]+:", lines[j]):  # directive options
            j += 1
        body = []
        for k in range(j, len(lines)):
            current = lines[k]
            if current.strip() and len(current) - len(current.lstrip()) <= indent:
                break
            body.append(current)
        code = textwrap.dedent("\n".join(body)).strip("\n")
        if code:
            blocks.append((j + 1, code))
    return blocks


def markdown_blocks(text: str) -> list[tuple[int, str]]:
    """``(line number, code)`` of each ```` ```python ```` fence, skips left out."""
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        match = _MD_FENCE.match(lines[i])
        if not match or not match["lang"]:
            i += 1
            continue
        end = next((k for k in range(i + 1, len(lines)) if lines[k].strip() == "```"), None)
        if end is None:
            raise ValueError(f"unclosed code fence at line {i + 1}")
        if match["lang"] in ("python", "py") and "<!-- " + SKIP_MARK not in _previous_line(
            lines, i
        ):
            blocks.append((i + 2, textwrap.dedent("\n".join(lines[i + 1 : end]))))
        i = end + 1
    return blocks


def page_blocks(path: Path) -> list[tuple[int, str]]:
    text = path.read_text(encoding="utf-8")
    return markdown_blocks(text) if path.suffix == ".md" else rst_blocks(text)


def _pages() -> list[Path]:
    skip = {"_build", "auto_examples"}
    pages = [
        path
        for path in sorted((ROOT / "docs").rglob("*.rst"))
        if not skip.intersection(path.relative_to(ROOT / "docs").parts)
    ]
    return [ROOT / "README.md", *pages]


PAGES = [path for path in _pages() if page_blocks(path)]

# Runs the blocks of one page in one namespace; a failing block is reported with its page
# and line, through the traceback's file name.
_RUNNER = """
import functools, sys, warnings
import torch
torch.set_num_threads(1)
from skfalcon import FlowPosteriorEstimator

_init = FlowPosteriorEstimator.__init__

@functools.wraps(_init)
def _capped_init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.max_epochs = min(self.max_epochs, {max_epochs})

FlowPosteriorEstimator.__init__ = _capped_init
warnings.simplefilter("ignore")  # convergence warnings of the capped training
namespace = {{"__name__": "__main__"}}
for name, code in {blocks!r}:
    exec(compile(code, name, "exec"), namespace)
"""


def run_page(path: Path, cwd: Path, blocks=None, timeout: int = TIMEOUT):
    """Run the Python blocks of ``path`` in a subprocess; return the completed process."""
    blocks = page_blocks(path) if blocks is None else blocks
    named = [
        (f"{path.relative_to(ROOT)}, block at line {line}", "\n" * (line - 1) + code)
        for line, code in blocks
    ]
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        MPLBACKEND="Agg",
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    )
    script = _RUNNER.format(max_epochs=MAX_EPOCHS, blocks=named)
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_blocks_are_extracted_with_their_lines():
    rst = textwrap.dedent(
        """\
        Title

        .. code-block:: python
           :caption: first

            a = 1
            if a:
                b = 2

        .. code-block:: bash

            pip install skfalcon

        .. docs-test: skip

        .. code-block:: python

            raise RuntimeError("skipped")

        .. code:: python

            c = a + b
        text after
        """
    )
    assert rst_blocks(rst) == [(5, "a = 1\nif a:\n    b = 2"), (21, "c = a + b")]
    markdown = "x\n```python\nd = 4\n```\n<!-- docs-test: skip -->\n```python\n1/0\n```\n"
    assert markdown_blocks(markdown) == [(3, "d = 4")]


def test_every_documented_page_is_collected():
    names = {path.relative_to(ROOT).as_posix() for path in PAGES}
    assert {"README.md", "docs/index.rst", "docs/quickstart.rst"} <= names


def test_a_failing_block_fails_with_its_page_and_line(tmp_path):
    path = ROOT / "docs" / "index.rst"
    result = run_page(path, tmp_path, blocks=[(3, "x = 1"), (7, "undefined_name")])
    assert result.returncode != 0
    assert "docs/index.rst, block at line 7" in result.stderr
    assert "line 7" in result.stderr and "NameError" in result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("path", PAGES, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_page_code_runs(path, tmp_path):
    result = run_page(path, tmp_path)  # files the blocks write land in tmp_path
    assert result.returncode == 0, f"{path.name} failed:\n{result.stderr[-5000:]}"
