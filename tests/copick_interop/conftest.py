"""copick interop tests: run with `make test-copick` (copick 1.x needs zarr < 3, its own venv).

In the main environment copick is not installed and every test here is skipped.
"""

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "copick_interop" in str(item.path):
            item.add_marker(pytest.mark.copick)
