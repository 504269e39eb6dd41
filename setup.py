"""Packages of the distribution; everything else is declared in pyproject.toml.

The recipes (``pretrain/``) and framework configs (``transfer/``) stay top-level folders of the
repository and ship inside the wheel as ``gsg_zoo/_configs/{pretrain,transfer}`` package data, where
:func:`gsg_zoo.resources.config_dir` finds them from any working directory.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent


def config_packages(*folders: str) -> dict[str, str]:
    """``gsg_zoo._configs.<dotted folder>`` -> folder, for each config folder and its sub-folders."""
    dirs = [Path(f) for f in folders] + [
        d.relative_to(HERE) for f in folders for d in sorted((HERE / f).rglob("*")) if d.is_dir()
    ]
    return {
        "gsg_zoo._configs." + ".".join(d.parts): d.as_posix() for d in dirs if "__pycache__" not in d.parts
    }


CONFIG_PACKAGES = config_packages("pretrain", "transfer")

setup(
    packages=find_packages(include=["gsg_zoo", "gsg_zoo.*"]) + list(CONFIG_PACKAGES),
    package_dir=CONFIG_PACKAGES,
    package_data={
        "gsg_zoo": ["zoo_manifest.json", "zoo_entries.yaml"],
        **{pkg: ["*.yaml", "*.md"] for pkg in CONFIG_PACKAGES},  # .py configs ship as modules
    },
)
