"""Claim 1 at toy scale through the real learner: without a predictor SimSiam collapses, SimSiam+GSG
keeps more of its projections' effective rank.

Each run is ``SelfSupervisedLearner.forward`` (so ``symmetric_negative_cosine`` / ``gsg_loss`` with
their stop-gradients) stepped by the trainer's :func:`~gsg_zoo.train.step.train_step` and
:func:`~gsg_zoo.train.optim.build_optimizer` (SGD 0.1, momentum 0.9, wd 5e-4) on BatchAugment views of 64
built-in 32-px images at 16 px, batch 64, 60 steps, ResNet-18, 64-d projections. The effective rank
(:func:`~gsg_zoo.train.monitor.effective_rank`) is that of the projections of 128 held-out images in eval
mode, as the pretraining monitor measures it.

Controls, same seed, data, views and steps:

- SimSiam *with* a predictor, the configuration that does not collapse, for SimSiam without one;
- SimSiam without a predictor (the same learner without guidance) for SimSiam+GSG without one.

Measured over seeds 0-3 of this setup on a 2-core CPU with one thread and a plain ``torch.optim.SGD``
loop (same data, views, model, lr, momentum and wd; ``python tests/test_claims_proxy.py SEED...``
repeats it with this module's code, which gave 3.90 / 13.06 / 22.52 for seed 0):

====  ==============  ==================  ==============  ============  ============
seed  simsiam_nopred  simsiam_gsg_nopred  simsiam (pred)  nopred/pred   gsg/nopred
====  ==============  ==================  ==============  ============  ============
0     4.47            13.10               21.44           0.21          2.93
1     6.55            12.52               21.14           0.31          1.91
2     8.77            11.90               23.80           0.37          1.36
3     5.32            12.92               23.96           0.22          2.43
====  ==============  ==================  ==============  ============  ============

(held-out rank at initialisation: 5.8-7.6 in eval mode, ~44 with batch statistics.) The margins sit
outside every measured seed: SimSiam without a predictor ends below ``COLLAPSE_RATIO`` = 0.5 of its
control (worst seed 0.37); SimSiam+GSG without a predictor ends above ``KEEP_RATIO`` = 1.25 times
its control (worst seed 1.36). The test runs seed 0; the rank of SimSiam+GSG without a predictor
stays at about half that of SimSiam with one (0.50-0.61): it keeps more, it does not keep all.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gsg_zoo.config.recipes import OptimConfig
from gsg_zoo.core.normalization import CIFAR_MEAN, CIFAR_STD
from gsg_zoo.data.batch_augment import BatchAugment
from gsg_zoo.data.synthetic import SyntheticShapes
from gsg_zoo.method.learner import LearnerConfig, SelfSupervisedLearner
from gsg_zoo.train.monitor import effective_rank
from gsg_zoo.train.optim import build_optimizer
from gsg_zoo.train.step import train_step

STEPS, BATCH, SIZE, SEED = 60, 64, 16, 0
COLLAPSE_RATIO, KEEP_RATIO = 0.5, 1.25
HEADS = {"backbone": "resnet18", "projector_hidden_dim": 64, "projector_dim": 64, "predictor_hidden_dim": 16}
OPTIM = OptimConfig(lr=0.1, scale_lr=False, weight_decay=5e-4, fix_predictor_lr=False)


def uint8_images(n: int, split: str) -> torch.Tensor:
    ds = SyntheticShapes(n, image_size=32, seed=0, split=split)
    return torch.stack([torch.from_numpy(np.array(ds[i][0])).permute(2, 0, 1) for i in range(n)])


def normalised(images: torch.Tensor) -> torch.Tensor:
    """Resized to SIZE (antialiased) and normalised like the training views."""
    x = F.interpolate(images.float(), size=SIZE, mode="bilinear", antialias=True) / 255
    return (x - torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR_STD).view(1, 3, 1, 1)


def final_rank(method: str, predictor: bool, seed: int, train: torch.Tensor, held_out: torch.Tensor) -> float:
    """Train one learner for STEPS steps; the effective rank of its held-out projections."""
    torch.manual_seed(seed)
    learner = SelfSupervisedLearner(LearnerConfig.for_method(method, predictor=predictor, **HEADS))
    optimizer = build_optimizer(dict(learner.online_modules().items()), OPTIM, BATCH)
    augment, gen = BatchAugment(SIZE, CIFAR_MEAN, CIFAR_STD), torch.Generator().manual_seed(seed)
    for _ in range(STEPS):
        train_step(learner, augment.views(train, learner.config.num_views, gen), optimizer)
    learner.eval()
    with torch.no_grad():
        return effective_rank(learner.encoder(held_out)[1])


RUNS = {
    "simsiam_nopred": ("simsiam", False),
    "simsiam_gsg_nopred": ("simsiam_gsg", False),
    "simsiam": ("simsiam", True),
}


def ranks(seed: int) -> dict[str, float]:
    train, held_out = uint8_images(BATCH, "train"), normalised(uint8_images(128, "test"))
    return {name: final_rank(*spec, seed, train, held_out) for name, spec in RUNS.items()}


pytestmark = pytest.mark.slow  # three short trainings: about a minute on 2 idle cores, several when loaded


@pytest.fixture(scope="module")
def seed_ranks() -> dict[str, float]:
    return ranks(SEED)


def test_simsiam_without_predictor_loses_rank_against_the_predictor_control(seed_ranks):
    assert seed_ranks["simsiam_nopred"] < COLLAPSE_RATIO * seed_ranks["simsiam"], seed_ranks


def test_gsg_without_predictor_keeps_more_rank_than_simsiam_without(seed_ranks):
    assert seed_ranks["simsiam_gsg_nopred"] > KEEP_RATIO * seed_ranks["simsiam_nopred"], seed_ranks


if __name__ == "__main__":  # the measurement behind the margins: python tests/test_claims_proxy.py 0 1 2 3
    import sys

    for s in map(int, sys.argv[1:]):
        r = ranks(s)
        print(
            s,
            {k: round(v, 2) for k, v in r.items()},
            f"nopred/pred {r['simsiam_nopred'] / r['simsiam']:.2f}",
            f"gsg/nopred {r['simsiam_gsg_nopred'] / r['simsiam_nopred']:.2f}",
            flush=True,
        )
