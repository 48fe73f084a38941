"""Execute a notebook top to bottom, the way the test suite checks that notebooks do not rot.

The kernel is this interpreter (sys.executable), whatever kernelspecs the machine has:
a fresh clone where `make test` only ran `pip install -e .[dev]` has no registered
kernel, and a user-level `python3` kernelspec may point at another Python. So a
kernelspec is written into a temporary folder and only that folder is searched.
IPython's and Jupyter's runtime files go to the same temporary folder, not to $HOME.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNEL_NAME = "lab-test-python"


def run_notebook(path: str | os.PathLike, env: Mapping[str, str] | None = None, timeout: float = 300):
    """Run every cell of `path` (cwd: the notebook's folder); returns the executed notebook.

    `env` is added to this process's environment for the kernel. A failing cell raises
    nbclient's CellExecutionError, whose message holds the cell and its traceback.
    """
    import nbformat
    from ipykernel.kernelspec import write_kernel_spec
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from nbclient import NotebookClient

    path = Path(path)
    notebook = nbformat.read(path, as_version=4)
    with tempfile.TemporaryDirectory(prefix="lab-nb-") as tmp:
        kernels = Path(tmp) / "kernels"
        write_kernel_spec(path=str(kernels / KERNEL_NAME))  # argv[0] is sys.executable
        kernel_env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
            "IPYTHONDIR": str(Path(tmp) / "ipython"),
            "JUPYTER_RUNTIME_DIR": str(Path(tmp) / "runtime"),
            **(env or {}),
        }
        manager = AsyncKernelManager(
            kernel_name=KERNEL_NAME, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernels)])
        )
        manager.connection_file = str(Path(tmp) / "kernel.json")
        client = NotebookClient(
            notebook, km=manager, timeout=timeout, resources={"metadata": {"path": str(path.parent)}}
        )
        client.execute(env=kernel_env)
    return notebook

