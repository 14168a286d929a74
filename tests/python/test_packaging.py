"""`pip install .` builds the module with scikit-build-core and the installed copy imports."""

import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_pip_install_builds_the_module(tmp_path):
    target = tmp_path / "site"
    env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-build-isolation", "--target", str(target), str(ROOT)],
        check=True, env=env, cwd=tmp_path, timeout=1800,
    )
    out = subprocess.run(
        [sys.executable, "-c", "import chatai; print(chatai.__version__); print(chatai.__file__)"],
        check=True, capture_output=True, text=True, cwd=tmp_path, timeout=60,
        env=dict(os.environ, PYTHONPATH=str(target)),
    ).stdout.split()
    import chatai

    assert out[0] == chatai.__version__
    assert out[1].startswith(str(target))
