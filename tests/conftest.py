import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core: one thread each, and
    os.environ["OMP_NUM_THREADS"] = "1"  # the same for their subprocesses (oversubscribed OpenMP spins)
    torch.set_num_threads(1)
else:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


#: The longest files (minutes on 2 cores, `--durations`), collected first: `make test` hands whole files
#: to the xdist workers in collection order, so a long file left to the end would run alone at the end.
LONGEST_FIRST = (
    "test_resume.py",
    "test_claims_proxy.py",
    "test_cluster.py",
    "test_demo.py",
    "test_foreign_shards.py",
    "test_dist_eval.py",
    "test_trainer_paths.py",
    "test_wheel.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order
