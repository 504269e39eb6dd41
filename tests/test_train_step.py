"""The shared training step and the trainer's parts: one step for trainer and benchmarks, RNG
restore on resume, epochs whose batches are all skipped, the monitor schedule, and the random
streams (each seeded from its key, none drawn from the global RNG)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from test_benchmarks import load
from test_pretrain import TINY as PRETRAIN_TINY

import gsg_zoo.train.step as ts
from gsg_zoo.config.recipes import load_recipe
from gsg_zoo.data.pretraining import EpochSeeded
from gsg_zoo.method.learner import LearnerConfig, SelfSupervisedLearner
from gsg_zoo.method.pairing import pair_indices
from gsg_zoo.train import trainer
from gsg_zoo.train.inputs import seed_global_rngs, stream_seed
from gsg_zoo.train.monitor import monitor_due
from gsg_zoo.train.state import restore_rng, rng_state

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
TINY = [*PRETRAIN_TINY, "monitor.every=-1"]


def tiny_learner(method: str = "byol_gsg") -> SelfSupervisedLearner:
    torch.manual_seed(0)
    cfg = LearnerConfig.for_method(
        method, backbone="resnet18", projector_hidden_dim=32, projector_dim=16, predictor_hidden_dim=8
    )
    return SelfSupervisedLearner(cfg)


def test_trainer_and_benchmarks_share_one_step():
    assert trainer.train_step is ts.train_step
    assert load("bench_step").train_step is ts.train_step
    assert load("learnability").train_step is ts.train_step
    assert "train_step(" in (BENCH / "bench_throughput.py").read_text()


def test_trainer_runs_its_steps_through_train_step(tmp_path, monkeypatch):
    calls = []

    def spy(*args, **kwargs):
        calls.append(kwargs["step"])
        return ts.train_step(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", spy)
    recipe = load_recipe("demo", [*TINY, "train.epochs=1", "train.max_steps_per_epoch=2"])
    trainer.Pretrainer(recipe, tmp_path / "run", progress=False).run()
    assert calls == [0, 1]


def test_train_step_scaler_off_equals_no_scaler_and_steps_the_ema():
    """A disabled GradScaler does what no scaler does; the EMA target moves after the step."""
    results = []
    for scaler in (None, torch.amp.GradScaler("cpu", enabled=False)):
        learner = tiny_learner()
        opt = torch.optim.SGD(learner.online_modules().parameters(), lr=0.1, momentum=0.9)
        target_before = [p.clone() for p in learner.target_encoder.parameters()]
        g = torch.Generator().manual_seed(1)
        views = [torch.randn(6, 3, 16, 16, generator=g) for _ in range(4)]
        out = ts.train_step(learner, views, opt, ema=learner, step=3, total_steps=10, scaler=scaler)
        assert out.loss.ndim == 0 and out.loss.grad_fn is not None
        moved = [not torch.equal(a, b) for a, b in zip(target_before, learner.target_encoder.parameters())]
        assert any(moved)
        results.append(learner.state_dict())
    for k, v in results[0].items():
        assert torch.equal(v, results[1][k]), k


def test_train_step_accepts_a_plain_loss():
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.5)
    loss = ts.train_step(lambda views: (w * views[0]).sum(), [torch.ones(3)], opt)
    assert float(loss.detach()) == 3.0 and torch.equal(w.detach(), torch.full((3,), 0.5))


def test_precision_and_autocast():
    cpu = torch.device("cpu")
    assert ts.resolve_precision("auto", cpu) is None and ts.resolve_precision("bf16", cpu) is torch.bfloat16
    with ts.autocast("cpu", torch.bfloat16):
        assert torch.is_autocast_enabled("cpu")
    with ts.autocast("cpu", None):
        assert not torch.is_autocast_enabled("cpu")


def test_restore_rng_sets_cuda_states_per_device(monkeypatch):
    """Mocked CUDA (this test runs on CPU-only machines too): one state per device that exists."""
    saved = {
        "torch": torch.get_rng_state(),
        "cuda": [torch.tensor([1], dtype=torch.uint8), torch.tensor([2], dtype=torch.uint8)],
    }
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)  # resumed on fewer GPUs than saved
    monkeypatch.setattr(
        torch.cuda, "set_rng_state", lambda state, index: restored.append((int(state), index))
    )
    restore_rng(saved)
    assert restored == [(1, 0)]


def test_restore_rng_without_cuda_restores_the_cpu_state():
    saved = rng_state()
    a = torch.rand(3)
    restore_rng(saved)
    assert torch.equal(torch.rand(3), a)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_resume_restores_cuda_rng(tmp_path):
    recipe = load_recipe(
        "demo", [*TINY, "train.epochs=1", "train.max_steps_per_epoch=1", "train.device=cuda"]
    )
    run = trainer.Pretrainer(recipe, tmp_path / "run", progress=False)
    run.run()
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["rng"]["cuda"]
    assert len(saved) == torch.cuda.device_count()
    torch.rand(4, device="cuda")  # moves the CUDA RNG on
    resumed = trainer.Pretrainer(recipe, tmp_path / "run", progress=False)
    assert resumed.resume()
    for index, state in enumerate(saved):
        assert torch.equal(torch.cuda.get_rng_state(index), state)


def test_every_image_unreadable_stops_with_a_clear_error(tmp_path):
    """Unreadable images are replaced; when no readable one is left the run stops, naming the problem."""
    root = tmp_path / "folder"
    for c in ("a", "b"):
        (root / "train" / c).mkdir(parents=True)
        for i in range(8):
            (root / "train" / c / f"{i}.png").write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    recipe = load_recipe(
        "demo",
        [
            *TINY,
            "data.dataset=imagefolder",
            f"data.root={root}",
            "train.epochs=1",
            "train.batch_size=8",
            "data.loader.num_workers=0",
            "monitor.every=-1",
        ],
    )
    with pytest.raises(RuntimeError, match="16 unreadable images in a row"):
        trainer.Pretrainer(recipe, tmp_path / "run", progress=False).run()


def test_monitor_due_schedule():
    assert [e for e in range(1, 6) if monitor_due(2, e, 5)] == [2, 4, 5]
    assert [e for e in range(1, 6) if monitor_due(0, e, 5)] == [5]
    assert not any(monitor_due(-1, e, 5) for e in range(1, 6))


def test_stream_seeds_are_keyed_and_distinct():
    keys = [
        (s, stream, e, r, k)
        for s in (0, 1)
        for stream in ("pairing", "views", "loader", "global")
        for e in range(3)
        for r in range(2)
        for k in range(3)
    ]
    seeds = [stream_seed(*key) for key in keys]
    assert seeds == [stream_seed(*key) for key in keys] and len(set(seeds)) == len(keys)
    assert all(0 <= s < 2**63 for s in seeds)


def test_learner_pairing_draws_from_the_generator_given_else_the_global_rng():
    learner = tiny_learner("simsiam_gsg")
    views = [torch.randn(8, 3, 16, 16) for _ in range(4)]
    a = learner(views, generator=torch.Generator().manual_seed(5)).pairing
    torch.rand(3)  # other draws from the global RNG change nothing
    b = learner(views, generator=torch.Generator().manual_seed(5)).pairing
    assert torch.equal(a, b) and torch.equal(a, pair_indices(8, generator=torch.Generator().manual_seed(5)))
    torch.manual_seed(7)
    c = learner(views).pairing  # no generator: the global RNG, as before
    torch.manual_seed(7)
    assert torch.equal(c, pair_indices(8))


def trainer_pairings(out: Path, monkeypatch: pytest.MonkeyPatch, disturb: bool) -> list[torch.Tensor]:
    """The pairings of 2 trainer steps; ``disturb``: something else draws from the global RNG first."""
    pairings, real_views = [], trainer.step_views

    def step(*args, **kwargs):
        out = ts.train_step(*args, **kwargs)
        pairings.append(out.pairing)
        return out

    def views(*args, **kwargs):
        if disturb:
            torch.rand(7)
        return real_views(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_step", step)
    monkeypatch.setattr(trainer, "step_views", views)
    recipe = load_recipe(
        "demo", [*TINY, "method=simsiam_gsg", "train.epochs=1", "train.max_steps_per_epoch=2"]
    )
    trainer.Pretrainer(recipe, out, progress=False).run()
    return pairings


def test_trainer_pairing_ignores_other_draws_from_the_global_rng(tmp_path, monkeypatch):
    calm = trainer_pairings(tmp_path / "calm", monkeypatch, disturb=False)
    disturbed = trainer_pairings(tmp_path / "disturbed", monkeypatch, disturb=True)
    assert len(calm) == 2 and all(torch.equal(a, b) for a, b in zip(calm, disturbed))


def test_loader_iterator_does_not_draw_from_the_global_rng(tmp_path):
    """The cause of a resume that was not exact: a new DataLoader iterator drew its workers' base seed from the global
    RNG (once per process with persistent workers), which shifted the pairing of a resumed run."""
    recipe = load_recipe("demo", [*TINY, "data.loader.num_workers=2", "data.loader.persistent_workers=true"])
    run = trainer.Pretrainer(recipe, tmp_path / "run", progress=False)
    run._start_epoch()
    state = torch.get_rng_state()
    next(iter(run.train_loader))
    assert torch.equal(state, torch.get_rng_state())


class Draws(torch.utils.data.Dataset):
    """Items drawn from the torch, ``random`` and NumPy global RNGs."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> tuple[float, float, float]:
        return float(torch.rand(())), random.random(), float(np.random.rand())


def seed_all(seed: int) -> tuple[float, float, float]:
    """Seed the torch, ``random`` and NumPy global RNGs; returns one draw of each, then reseeds."""
    torch.manual_seed(seed), random.seed(seed), np.random.seed(seed)  # noqa: B018
    draws = float(torch.rand(())), random.random(), float(np.random.rand())
    torch.manual_seed(seed), random.seed(seed), np.random.seed(seed)  # noqa: B018
    return draws


def test_epoch_seeded_items_are_keyed_and_leave_the_global_rngs_alone():
    ds = EpochSeeded(Draws(), seed=3)
    expected = seed_all(1)
    first = [ds[(i, 2)] for i in range(4)]
    assert (float(torch.rand(())), random.random(), float(np.random.rand())) == expected
    seed_all(9)
    assert [ds[(i, 2)] for i in range(4)] == first and ds[(0, 3)] != first[0]


def test_epoch_seeded_items_in_workers_equal_the_main_process_ones():
    """Workers skip the RNG restore: their items must still be the keyed ones, in any order."""
    ds = EpochSeeded(Draws(), seed=3)
    main = [ds[(i, 2)] for i in range(4)]
    keys = [(3, 2), (1, 2), (0, 2), (2, 2)]
    loader = torch.utils.data.DataLoader(ds, sampler=keys, batch_size=None, num_workers=2)
    assert [tuple(float(x) for x in item) for item in loader] == [main[i] for i, _ in keys]


def test_seed_global_rngs_seeds_the_cpu_and_the_training_device():
    devices = [torch.device("cpu")] + ([torch.device("cuda", 0)] if torch.cuda.is_available() else [])
    for device in devices:
        seed_global_rngs(7, device)
        a = torch.rand(3, device=device)
        torch.manual_seed(7)
        assert torch.equal(a, torch.rand(3, device=device)), device
