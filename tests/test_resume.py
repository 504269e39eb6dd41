"""Exact resume with the recipes' loader settings and DDP correctness.

A run is killed with SIGKILL at several points (mid-epoch, during a checkpoint write, right after a
checkpoint) and resumed each time; the end state must equal an uninterrupted run's bit for bit (CPU).
The kills are exact, not timed: the runs go through a driver (``DRIVER``) that runs ``gsg pretrain``
with ``trainer.train_step`` and ``os.replace`` wrapped to SIGKILL the process at a chosen step or
checkpoint rename. Runs are tiny (32 images of 16 px, batch 8, 3 epochs), with the default loader:
2 workers, persistent.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_pretrain import TINY

from gsg_zoo.config.recipes import DataConfig, load_recipe
from gsg_zoo.core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from gsg_zoo.train.trainer import Pretrainer

DRIVER = r'''
"""`gsg pretrain ARGS` that SIGKILLs itself where GSG_TEST_KILL says, then dumps this rank's state."""
import json, os, signal, sys
from pathlib import Path

import torch

from gsg_zoo.train import trainer
from gsg_zoo.app.cli import main

KILL = json.loads(os.environ.get("GSG_TEST_KILL") or "{}")  # {"at": step|write|after, "n": N, "rank": R}
RANK = int(os.environ.get("RANK", "0"))
seen = {"model": None, "pairings": [], "renames": 0}


def die_if(point, n):
    if KILL.get("at") == point and KILL.get("n") == n and KILL.get("rank", 0) == RANK:
        os.kill(os.getpid(), signal.SIGKILL)


real_step, real_replace = trainer.train_step, os.replace


def step(model, views, *args, **kwargs):  # "step": before global step N
    die_if("step", kwargs["step"])
    out = real_step(model, views, *args, **kwargs)
    seen["model"] = model
    seen["pairings"].append(out.pairing.tolist())
    return out


def replace(src, dst):  # "write": before the N-th rename into last.pt; "after": right after it
    last = Path(dst).name == "last.pt"
    seen["renames"] += last
    if last:
        die_if("write", seen["renames"])
    real_replace(src, dst)
    if last:
        die_if("after", seen["renames"])


trainer.train_step, os.replace = step, replace
code = main(sys.argv[1:])
learner = getattr(seen["model"], "module", seen["model"])
if learner is not None:
    torch.save({"params": {n: p.detach() for n, p in learner.named_parameters()},
                "grads": {n: p.grad for n, p in learner.named_parameters() if p.grad is not None},
                "pairings": seen["pairings"]}, Path(os.environ["GSG_TEST_DUMP"]) / f"rank{RANK}.pt")
sys.exit(code)
'''

LOADER_DEFAULTS = [s for s in TINY if not s.startswith("data.loader.num_workers")]  # the recipes' loader
RUN = [
    *LOADER_DEFAULTS,
    "data.synthetic.num_images=32",
    "train.batch_size=8",
    "train.epochs=3",
    "monitor.every=-1",
]
STEPS_PER_EPOCH = 4


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pretrain(tmp: Path, out: str, overrides: list[str], kill: dict | None = None, ranks: int = 1) -> int:
    """Run the driver (under torchrun for ``ranks`` > 1); returns its exit code."""
    driver = tmp / "driver.py"
    driver.write_text(DRIVER)
    (tmp / out).mkdir(exist_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GSG_TEST_KILL": json.dumps(kill or {}),
        "GSG_TEST_DUMP": str(tmp / out),
    }
    launch = [sys.executable]
    if ranks > 1:
        launch += ["-m", "torch.distributed.run", f"--nproc_per_node={ranks}", f"--master_port={free_port()}"]
    args = ["pretrain", "demo", "--out", str(tmp / out), "--no-progress"]
    for s in overrides:
        args += ["--set", s]
    log = tmp / out / "log.txt"
    with log.open("w") as f:  # a file, not a pipe: the killed run's orphaned workers do not hold it up
        res = subprocess.run([*launch, str(driver), *args], env=env, stdout=f, stderr=f, timeout=600)
    if kill is None:
        assert res.returncode == 0, log.read_text()[-3000:]
    return res.returncode


def last(tmp: Path, out: str) -> dict:
    return load_checkpoint(tmp / out / "checkpoints" / "last.pt")


def assert_same_run(a: dict, b: dict) -> None:
    """Bit-identical weights (online, EMA target, BN buffers), optimiser state, counters and losses."""
    assert (a["epoch"], a["step"]) == (b["epoch"], b["step"])
    assert a["model"].keys() == b["model"].keys()
    diffs = {k: float((v.double() - b["model"][k].double()).abs().max()) for k, v in a["model"].items()}
    assert not any(diffs.values()), {k: d for k, d in diffs.items() if d}
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [(r["loss"], r["lr"]) for r in a["history"]] == [(r["loss"], r["lr"]) for r in b["history"]]


def run_until_killed(tmp: Path, out: str, overrides: list[str], kill: dict, ranks: int = 1) -> None:
    """Run until the driver's SIGKILL at ``kill`` (which must come before the run ends)."""
    code = pretrain(tmp, out, overrides, kill, ranks)
    assert code != 0, f"the run finished before its kill at {kill}"


def two_epoch_run(dataset: str, root: object, checkpoint_steps: int, stream: bool = False) -> list[str]:
    """A TINY 2-epoch run on ``dataset`` at ``root`` (batch 8, a step checkpoint every ``checkpoint_steps``,
    no monitor) with the recipes' 2 persistent loader workers; ``stream``: streamed, a buffer of 9."""
    loader = [s for s in TINY if not s.startswith("data.loader.num_workers")]
    streamed = ["data.stream.enabled=true", "data.stream.shuffle_buffer=9"] if stream else []
    run = [*loader, f"data.dataset={dataset}", f"data.root={root}", *streamed, "train.batch_size=8"]
    return [*run, "train.epochs=2", f"train.checkpoint_steps={checkpoint_steps}", "monitor.every=-1"]


def sigkill_resume_equals_uninterrupted(tmp: Path, run: list[str], step: int, epoch_step: int) -> None:
    """An uninterrupted run; the same run SIGKILLed before global ``step`` (after a checkpoint
    ``epoch_step`` steps into its epoch) and rerun: bit-identical."""
    pretrain(tmp, "full", run)
    run_until_killed(tmp, "killed", run, {"at": "step", "n": step})
    assert last(tmp, "killed")["epoch_step"] == epoch_step
    pretrain(tmp, "killed", run)
    assert_same_run(last(tmp, "full"), last(tmp, "killed"))


def test_recipes_default_loader_is_multiprocess_and_persistent():
    """What the kill-and-resume tests run: the DataConfig defaults, which the recipes keep."""
    dc = DataConfig()
    assert dc.loader.num_workers > 0 and dc.loader.persistent_workers
    assert load_recipe("demo", LOADER_DEFAULTS).data.loader.num_workers == dc.loader.num_workers


MID_EPOCH = {"at": "step", "n": STEPS_PER_EPOCH + 1}  # epoch 2's 2nd step: resumes at epoch 1
IN_WRITE = {"at": "write", "n": 1}  # resumed at epoch 1: its 1st save (epoch 2), before the rename
AFTER_SAVE = {"at": "after", "n": 1}  # the same save, right after the rename
EVERY_KILL = (MID_EPOCH, IN_WRITE, AFTER_SAVE)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "views", "kills"),
    [
        ("simsiam_gsg", "pil", EVERY_KILL),
        ("byol_gsg", "batch_augment", EVERY_KILL),
        ("byol_gsg", "pil", (MID_EPOCH,)),
        (
            "simsiam_gsg",
            "mocov2_batch_augment",
            (MID_EPOCH,),
        ),  # simsiam_gsg's batch views: worker crop boxes + device resize and blur
    ],
    ids=[
        "simsiam_gsg-pil-every_kill",
        "byol_gsg-batch_augment-every_kill",
        "byol_gsg-pil-mid",
        "simsiam_gsg-mocov2_batch_augment-mid",
    ],
)
def test_kill_and_resume_is_exact(tmp_path, method, views, kills):
    """Killed (in turn) mid-epoch 2, during epoch 2's checkpoint write, right after it, and resumed
    each time: the end state equals an uninterrupted run's. Each method and each view path meets every
    kill; every pair of them the mid-epoch one (simsiam_gsg's batch views through the MoCo-v2 path)."""
    run = [*RUN, f"method={method}", f"data.batch_augment={views.endswith('batch_augment')}"]
    if views.startswith("mocov2"):
        run.append("data.augmentation=mocov2")
    ckpts = tmp_path / "killed" / "checkpoints"
    pretrain(tmp_path, "full", run)
    for kill in kills:
        run_until_killed(tmp_path, "killed", run, kill)
        if kill is IN_WRITE:
            assert list(ckpts.glob(".last.pt.*.tmp")), "killed after the write, before the rename"
        want = 2 if kill is AFTER_SAVE else 1  # the killed write leaves the previous one, loadable
        assert last(tmp_path, "killed")["epoch"] == want, kill
    pretrain(tmp_path, "killed", run)
    assert_same_run(last(tmp_path, "full"), last(tmp_path, "killed"))
    assert not list(ckpts.glob(".*.tmp")), "a killed write's temporary file is cleaned up"


@pytest.mark.slow
def test_ddp_gloo_kill_and_resume_is_exact_ranks_agree_and_pair_locally(tmp_path):
    """2 processes (gloo): killed mid-epoch 2 and resumed equals uninterrupted, bit for bit. In the
    uninterrupted run both ranks end with the same parameters and the same (all-reduced) gradients,
    and each rank pairs within its local batch, with its own pairing stream."""
    run = [*RUN, "method=byol_gsg", "train.batch_size=16", "train.epochs=2", "monitor.every=0"]
    local, steps = 8, 2  # per rank: 16 of the 32 images in batches of 8
    pretrain(tmp_path, "full", run, ranks=2)
    summary = json.loads((tmp_path / "full" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 2 * steps and summary["knn_top1"] is not None
    r0, r1 = (torch.load(tmp_path / "full" / f"rank{r}.pt", weights_only=True) for r in range(2))
    assert r0["params"].keys() == r1["params"].keys() and r0["grads"]
    assert all(torch.equal(v, r1["params"][k]) for k, v in r0["params"].items())
    assert all(torch.equal(v, r1["grads"][k]) for k, v in r0["grads"].items())
    for pairings in (r0["pairings"], r1["pairings"]):
        assert len(pairings) == 2 * steps
        assert all(sorted(p) == list(range(local)) for p in pairings)  # within the local batch
    assert r0["pairings"] != r1["pairings"]
    run_until_killed(tmp_path, "killed", run, {"at": "step", "n": steps + 1}, ranks=2)
    assert last(tmp_path, "killed")["epoch"] == 1
    pretrain(tmp_path, "killed", run, ranks=2)
    assert_same_run(last(tmp_path, "full"), last(tmp_path, "killed"))


def test_a_checkpoint_without_todays_keys_is_refused_and_kept(tmp_path):
    """A checkpoint holds STATE_KEYS; one lacking a key, or of other random streams, cannot resume exactly:
    it is refused with what to do, and the file stays as it was."""
    from gsg_zoo.train.state import RNG_STREAMS, STATE_KEYS

    base = [*TINY, "train.epochs=1", "monitor.every=-1", "train.max_steps_per_epoch=1"]
    Pretrainer(load_recipe("demo", base), tmp_path / "run", progress=False).run()
    path = tmp_path / "run" / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    assert set(state) == {"kind", "format_version", *STATE_KEYS} and state["rng_streams"] == RNG_STREAMS
    resume = Pretrainer(load_recipe("demo", [*base, "train.epochs=2"]), tmp_path / "run", progress=False)
    for broken, match in (
        (
            {k: v for k, v in state.items() if k not in {"kind", "format_version", "epoch_step"}},
            "lacks epoch_step",
        ),
        ({**state, "rng_streams": 1}, "drew from random streams 1"),
    ):
        save_checkpoint(path, broken)
        before = path.read_bytes()
        with pytest.raises(CheckpointError, match=match + ".*start a new run"):
            resume.run()
        assert path.read_bytes() == before


@pytest.mark.slow
def test_ddp_gradients_match_a_single_process(tmp_path):
    """See GRAD_DRIVER: all-reduced gradients are equal on both ranks, and equal one process's."""
    driver = tmp_path / "grads.py"
    driver.write_text(GRAD_DRIVER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GSG_TEST_DUMP": str(tmp_path / "grads.json")}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={free_port()}",
        str(driver),
    ]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    for method, r in json.loads((tmp_path / "grads.json").read_text()).items():
        assert r["ranks_equal"] and r["local_pairing"], (method, r)
        assert r["per_rank_bn_vs_mean_of_local"] < 1e-6, (method, r)
        assert r["frozen_bn_vs_concatenated"] < 1e-5, (method, r)
        assert r["per_rank_bn_vs_concatenated"] > 1e-3, (method, r)  # why DDP != one big batch here


GRAD_DRIVER = r'''
"""One DDP step on 2 ranks (gloo) of SimSiam+GSG and BYOL+GSG, against one process.

DDP averages the ranks' gradients, each the gradient of its local batch's mean loss, and each rank
pairs within its local batch. So the DDP gradient equals (1) the mean of the ranks' single-process
gradients on their local batches, always; (2) the single-process gradient on the concatenated batch
with the ranks' pairings side by side (block-diagonal) when every sample's loss depends on its own
views only: with BatchNorm statistics frozen (eval), not with per-rank BatchNorm in train mode (the
CPU/gloo default, no SyncBatchNorm), where each rank normalises with its own local-batch statistics.
"""
import copy, json, os

import torch
import torch.distributed as dist
from torch import nn

from gsg_zoo.method.learner import LearnerConfig, SelfSupervisedLearner

dist.init_process_group("gloo")
RANK, WORLD, N = dist.get_rank(), dist.get_world_size(), 6


def gather(t):
    out = [torch.empty_like(t) for _ in range(WORLD)]
    dist.all_gather(out, t.contiguous())
    return out


def grads(m):
    return torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None])


def rel(a, b):
    return float((a - b).norm() / b.norm())


def learner(method, freeze_bn):
    torch.manual_seed(0)
    m = SelfSupervisedLearner(LearnerConfig.for_method(
        method, backbone="resnet18", projector_hidden_dim=32, projector_dim=16, predictor_hidden_dim=8))
    for mod in m.modules():
        mod.train(not (freeze_bn and isinstance(mod, nn.modules.batchnorm._BatchNorm)))
    return m


def one_step(method, freeze_bn):
    m = learner(method, freeze_bn)
    single = copy.deepcopy(m)
    g = torch.Generator().manual_seed(1)
    views = [torch.randn(WORLD * N, 3, 16, 16, generator=g) for _ in range(4)]
    local = [v[RANK * N:(RANK + 1) * N] for v in views]
    ddp = nn.parallel.DistributedDataParallel(m)  # kept alive: its hooks all-reduce in backward
    out = ddp(local, generator=torch.Generator().manual_seed(10 + RANK))
    out.loss.backward()
    g_ddp, pairings = grads(m), gather(out.pairing)
    single(local, generator=torch.Generator().manual_seed(10 + RANK)).loss.backward()
    mean_local = torch.stack(gather(grads(single))).mean(0)
    concat = learner(method, freeze_bn)
    block = torch.cat([p + k * N for k, p in enumerate(pairings)])
    concat._pairing = lambda x, generator=None: block
    concat(views).loss.backward()
    return g_ddp, mean_local, grads(concat), out.pairing


results = {}
for method in ("simsiam_gsg", "byol_gsg"):
    r = {}
    for freeze_bn in (False, True):
        g_ddp, mean_local, g_concat, pairing = one_step(method, freeze_bn)
        other = gather(g_ddp)
        r["ranks_equal"] = r.get("ranks_equal", True) and all(torch.equal(o, g_ddp) for o in other)
        r["local_pairing"] = sorted(pairing.tolist()) == list(range(N))
        key = "frozen_bn" if freeze_bn else "per_rank_bn"
        r[f"{key}_vs_concatenated"] = rel(g_ddp, g_concat)
        if not freeze_bn:
            r["per_rank_bn_vs_mean_of_local"] = rel(g_ddp, mean_local)
    results[method] = r
if RANK == 0:
    with open(os.environ["GSG_TEST_DUMP"], "w") as f:
        json.dump(results, f)
dist.destroy_process_group()
'''
