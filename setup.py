"""Packages of the distribution; everything else is declared in pyproject.toml.

The shipped configs stay in the repository's top-level ``configs/`` folder and go into the wheel as
``gsg_zoo/_configs/{pretrain,detectron2,mmseg}`` package data, where
:func:`gsg_zoo.core.resources.config_dir` finds them from any working directory.
"""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
CONFIGS = HERE / "configs"


def config_packages() -> dict[str, str]:
    """``gsg_zoo._configs.<dotted folder>`` -> ``configs/<folder>``, for every folder below ``configs/``."""
    dirs = [d.relative_to(CONFIGS) for d in sorted(CONFIGS.rglob("*")) if d.is_dir()]
    return {
        "gsg_zoo._configs." + ".".join(d.parts): (Path("configs") / d).as_posix()
        for d in dirs
        if "__pycache__" not in d.parts
    }


CONFIG_PACKAGES = config_packages()

setup(
    packages=find_packages(include=["gsg_zoo", "gsg_zoo.*"]) + list(CONFIG_PACKAGES),
    package_dir=CONFIG_PACKAGES,
    package_data={
        "gsg_zoo.zoo": ["zoo_manifest.json", "zoo_entries.yaml"],
        "gsg_zoo.eval": ["simclr_subsets/*.txt.gz"],  # SimCLR's ImageNet 1 % / 10 % lists
        **{pkg: ["*.yaml", "*.md"] for pkg in CONFIG_PACKAGES},  # .py configs ship as modules
    },
)
