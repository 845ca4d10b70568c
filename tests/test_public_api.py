"""Every package's public names resolve to real objects, load on first use, and ``import rlir_env`` stays light."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PACKAGES = ("worldmodels", "worldmodels.runtime", "rlir_env", "evaluation", "evaluation.idm", "posttrain", "leaderboard")


@pytest.mark.parametrize("package", PACKAGES)
def test_every_exported_name_resolves(package):
    module = importlib.import_module(package)
    assert module.__all__, package
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"
        assert name in dir(module)
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        module.not_a_name  # noqa: B018


def test_importing_the_packages_loads_no_torch():
    code = "import sys, worldmodels, rlir_env, evaluation, posttrain, leaderboard, rlir; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
