"""Execute the example notebooks in a real Jupyter kernel, so that they cannot rot.

Skipped when the ``plots`` extra (matplotlib) or the Jupyter packages (nbformat, nbclient,
ipykernel) are missing.
"""

import time
from pathlib import Path

import pytest

pytest.importorskip("matplotlib", reason="the notebooks need the plots extra")
nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
kernelspec = pytest.importorskip("jupyter_client.kernelspec")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.ipynb"))
KERNEL = "python3"


def _has_kernel() -> bool:
    try:
        kernelspec.KernelSpecManager().get_kernel_spec(KERNEL)
    except kernelspec.NoSuchKernel:
        return False
    return True


def test_the_workflow_notebook_is_collected():
    assert "workflow.ipynb" in [path.name for path in NOTEBOOKS]


@pytest.mark.slow
@pytest.mark.skipif(not _has_kernel(), reason=f"no {KERNEL!r} Jupyter kernel")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_executes(path, tmp_path, monkeypatch):
    # The kernel inherits the environment: one thread per process (tiny networks on a
    # shared CPU), and matplotlib's inline backend so the figures are really rendered.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("MPLBACKEND", raising=False)
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=300,
        kernel_name=KERNEL,
        resources={"metadata": {"path": str(tmp_path)}},  # files it writes land here
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    elapsed = time.perf_counter() - start

    outputs = [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]
    figures = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(figures) >= 5, "the notebook should draw its figures"
    text = "".join(output.get("text", "") for output in outputs)
    assert "identical samples after reload: True" in text
    # The fit's progress bar shows, without tqdm's advice about ipywidgets.
    streams = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    widgets = [
        o for o in outputs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    ]
    assert widgets or ("fit" in streams and "epoch" in streams)
    assert "TqdmWarning" not in streams and "IProgress not found" not in streams
    print(f"{path.name} executed in {elapsed:.1f} s")
