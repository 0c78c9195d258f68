"""The benchmark and tool scripts import against the package as it is now (the parity scripts need
torch, which the test environment lacks, and are left out): a renamed or moved name fails here, not
on the GPU machine the benchmarks are run on."""
import importlib
import os

import pytest

SCRIPTS = sorted(name[:-3] for name in os.listdir(os.path.join(os.path.dirname(__file__), "..", "scripts"))
                 if name.endswith(".py") and not name.startswith("parity_"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_imports(name):
    module = importlib.import_module(f"scripts.{name}")
    assert callable(getattr(module, "main", None)), f"scripts/{name}.py has no main()"
