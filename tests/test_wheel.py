"""The built wheel works without the checkout: installed into a fresh venv, run from an empty folder.

The fresh venv reuses the test environment's installed dependencies through a ``.pth`` line (not a
site dir, so the checkout's editable-install hook there is not run): only the wheel provides gsg_zoo.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SKIP = (
    ".git",
    "runs",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "results",
)


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict[str, str], Path]:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(*SKIP))
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            str(src),
            "-w",
            str(tmp / "dist"),
        ],
        cwd=tmp,
    )
    (wheel,) = (tmp / "dist").glob("gsg_zoo-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp)
    py = venv / "bin" / "python"
    purelib = _run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp
    ).strip()
    Path(purelib, "cached_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            str(wheel),
        ],
        cwd=tmp,
    )
    empty = tmp / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", GSG_CACHE=str(tmp / "features"), PATH=f"{venv / 'bin'}:{env['PATH']}")
    return venv, env, empty


@pytest.mark.slow
def test_wheel_is_what_runs(installed):
    venv, env, empty = installed
    where = _run([str(venv / "bin" / "python"), "-c", "import gsg_zoo; print(gsg_zoo.__file__)"], empty, env)
    assert where.startswith(str(venv)), f"gsg_zoo imported from {where}, not from the wheel"
    assert "pretrain" in _run(["gsg", "--help"], empty, env)


@pytest.mark.slow
def test_wheel_lists_recipes_from_package_data(installed):
    venv, env, empty = installed
    assert "demo" in _run(["gsg", "pretrain", "--list"], empty, env).split()
    det = _run(["gsg", "transfer", "detection", "recipes"], empty, env)
    assert "voc_R_50_C4_24k" in det and str(venv) in det
    seg = _run(["gsg", "transfer", "segmentation", "recipes"], empty, env)
    assert "voc12aug-fcn" in seg and str(venv) in seg


@pytest.mark.slow
def test_wheel_pretrains_and_evaluates(installed):
    venv, env, empty = installed
    small = [
        "--set",
        "train.epochs=1",
        "--set",
        "data.synthetic.num_images=128",
        "--set",
        "train.batch_size=32",
        "--set",
        "train.max_steps_per_epoch=2",
        "--set",
        "monitor.every=-1",
        "--set",
        "data.loader.num_workers=0",
    ]
    out = _run(["gsg", "pretrain", "demo", "--out", "run", "--no-progress", *small], empty, env)
    assert "done:" in out and (empty / "run" / "checkpoints" / "last.pt").is_file()
    knn = [
        "gsg",
        "eval",
        "knn",
        "--model",
        "random:resnet18",
        "--dataset",
        "synthetic",
        "--subset",
        "200",
        "--workers",
        "0",
        "--no-progress",
        "--image-size",
        "64",
    ]
    report = _run(knn, empty, env)
    assert "(200 train / 200 test)" in report and "| 200 | 0.1 |" in report
