"""Pretraining that survives a cluster: one resume point, mid-epoch checkpoints, preemption,
no restart loops, guarded inputs, and the GPU switches (mocked here; ``-m gpu`` runs them for real).

Multi-process tests run torchrun with gloo processes on the CPU (marked slow); the driver of
``test_resume`` SIGKILLs or SIGTERMs a rank at an exact step, once.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from test_pretrain import TINY
from test_resume import RUN, assert_same_run, last

from gsg_zoo.app import cli
from gsg_zoo.config.recipes import load_recipe
from gsg_zoo.core import distributed
from gsg_zoo.train import step as train_step
from gsg_zoo.train import trainer as trainer_module
from gsg_zoo.train.control import EXIT_NONFINITE, EXIT_PREEMPTED, NONFINITE_MARKER, PREEMPTED_MARKER, RunLock
from gsg_zoo.train.state import load_scaler_state
from gsg_zoo.train.trainer import Pretrainer


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a loaded 2-core machine two OpenMP threads spin against the other jobs
    (a 6 s run took 75 s); results are the same."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


DRIVER = r'''
"""`gsg pretrain ARGS`, sending GSG_TEST_SIGNAL to itself before global step N on rank R, once."""
import json, os, signal, sys
from pathlib import Path

import torch

from gsg_zoo.train import trainer
from gsg_zoo.app.cli import main

HIT = json.loads(os.environ.get("GSG_TEST_HIT") or "{}")  # {"n": N, "rank": R, "signal": "SIGKILL", "to": ...}
RANK, DUMP = int(os.environ.get("RANK", "0")), Path(os.environ["GSG_TEST_DUMP"])
ONCE = DUMP / f"hit{RANK}"
steps = []
real_step = trainer.train_step


def step(model, views, *args, **kwargs):
    if HIT and kwargs["step"] == HIT["n"] and RANK == HIT["rank"] and not ONCE.exists():
        ONCE.write_text("hit")
        os.kill(os.getppid() if HIT.get("to") == "launcher" else os.getpid(), getattr(signal, HIT["signal"]))
    steps.append(kwargs["step"])
    return real_step(model, views, *args, **kwargs)


trainer.train_step = step
try:
    code = main(sys.argv[1:])
except SystemExit as exit_:  # preempted: the steps are still written
    code = exit_.code
(DUMP / f"steps{RANK}.json").write_text(json.dumps(steps))
(DUMP / f"exit{RANK}").write_text(str(code))
sys.exit(code)
'''

# 64 images, global batch 16, 2 ranks: 4 steps an epoch, 2 epochs; check steps every 2 steps and a
# step-based save after global step 6 (inside epoch 2); a hang fails the test instead of stalling it
CLUSTER_RUN = [
    *RUN,
    "data.synthetic.num_images=64",
    "train.batch_size=16",
    "train.epochs=2",
    "method=simsiam_gsg",
    "train.dist_timeout_minutes=1.5",
    "train.checkpoint_steps=6",
    "train.checkpoint_every=1",
    "train.log_every=2",
]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: CLUSTER_RUN on 2 ranks, never interrupted."""
    tmp = tmp_path_factory.mktemp("cluster")
    assert launch(tmp, "full", CLUSTER_RUN)[0] == 0
    return tmp / "full"


def launch(
    tmp: Path,
    out: str,
    overrides: list[str],
    hit: dict | None = None,
    ranks: int = 2,
    restarts: int = 0,
    extra: list[str] = (),
    launcher: list[str] = (),
) -> tuple[int, str]:
    """Run the driver under torchrun; returns (exit code, log)."""
    driver = tmp / "cluster_driver.py"
    driver.write_text(DRIVER)
    (tmp / out).mkdir(exist_ok=True)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "GSG_TEST_HIT": json.dumps(hit or {}),
        "GSG_TEST_DUMP": str(tmp / out),
    }
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={ranks}",
        "--standalone",
        f"--max-restarts={restarts}",
        *launcher,
        str(driver),
        "pretrain",
        "demo",
        "--out",
        str(tmp / out),
        "--no-progress",
        *extra,
    ]
    for s in overrides:
        cmd += ["--set", s]
    log = tmp / out / "log.txt"
    with log.open("w") as f:
        res = subprocess.run(cmd, env=env, stdout=f, stderr=f, timeout=300)
    return res.returncode, log.read_text()


@pytest.mark.slow
def test_torchrun_restart_after_sigkill_resumes_mid_epoch_bit_exactly_despite_resume_flag(
    tmp_path, uninterrupted
):
    """A rank is SIGKILLed after a step-based mid-epoch checkpoint; torchrun restarts the job with the
    same arguments, including ``--resume`` of an older checkpoint: the restart continues from
    OUT/checkpoints/last.pt (2 steps left, not 4) and ends bit-identical to an uninterrupted run."""
    run = CLUSTER_RUN
    seed = str(uninterrupted / "checkpoints" / "epoch_0001.pt")  # the full run after epoch 1
    code, log = launch(
        tmp_path,
        "killed",
        run,
        {"n": 7, "rank": 1, "signal": "SIGKILL"},
        restarts=1,
        extra=["--resume", seed],
    )
    assert code == 0, log[-3000:]
    assert (tmp_path / "killed" / "hit1").exists(), "the kill happened"
    assert "at epoch 1, step 6 (2 into the epoch)" in log
    assert json.loads((tmp_path / "killed" / "steps0.json").read_text()) == [6, 7]  # the restart's steps
    assert_same_run(last(uninterrupted.parent, "full"), last(tmp_path, "killed"))


@pytest.mark.slow
def test_sigterm_on_one_rank_saves_all_at_one_step_exits_75_and_rerun_is_exact(tmp_path, uninterrupted):
    run = CLUSTER_RUN
    code, log = launch(tmp_path, "stopped", run, {"n": 4, "rank": 1, "signal": "SIGTERM"})
    assert code != 0 and f"exitcode  : {EXIT_PREEMPTED}" in log, log[-3000:]
    state = last(tmp_path, "stopped")
    assert (state["epoch"], state["step"], state["epoch_step"]) == (1, 6, 2)  # the next check step
    assert json.loads((tmp_path / "stopped" / "steps0.json").read_text())[-1] == 5  # rank 0 stopped there too
    assert launch(tmp_path, "stopped", run)[0] == 0
    assert_same_run(last(uninterrupted.parent, "full"), last(tmp_path, "stopped"))


@pytest.mark.slow
def test_sigusr1_to_torchrun_reaches_every_rank_with_the_documented_flags(tmp_path):
    """The SLURM set-up of docs/guides/cluster.md: SIGUSR1 to the torchrun agent (which forwards it only
    when told to) -> every rank saves at one step and exits 75, and PREEMPTED.json says so."""
    run = [*CLUSTER_RUN, "train.log_every=1"]
    forward = ["--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1", "--shutdown-timeout=60"]
    hit = {"n": 2, "rank": 1, "signal": "SIGUSR1", "to": "launcher"}
    code, log = launch(tmp_path, "stopped", run, hit, launcher=forward)
    assert code != 0 and "SIGUSR1" in log, log[-3000:]  # torchrun's own code after a signal: 1
    assert [(tmp_path / "stopped" / f"exit{r}").read_text() for r in (0, 1)] == [str(EXIT_PREEMPTED)] * 2, log
    state, marker = (
        last(tmp_path, "stopped"),
        json.loads((tmp_path / "stopped" / PREEMPTED_MARKER).read_text()),
    )
    steps = [json.loads((tmp_path / "stopped" / f"steps{r}.json").read_text()) for r in (0, 1)]
    assert steps[0] == steps[1] and steps[0][-1] + 1 == state["step"] == marker["step"]  # the same step
    assert 0 < state["epoch_step"] < 4 and marker["exit_code"] == EXIT_PREEMPTED


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_with_node_local_out_stop_with_the_shared_storage_error(tmp_path):
    """Two torchrun "nodes" on localhost, each with its own working directory and a relative --out; only
    node 0's holds a checkpoint. Every rank stops promptly with the error; nobody hangs."""
    overrides = [*RUN, "train.batch_size=16", "train.epochs=2"]
    nodes = [tmp_path / "node0", tmp_path / "node1"]
    for node in nodes:
        node.mkdir()
    seed = Pretrainer(
        load_recipe("demo", [*overrides, "train.epochs=1", "data.loader.num_workers=0"]),
        nodes[0] / "run",
        progress=False,
    )
    seed.run()
    port, procs = _free_port(), []
    for rank, node in enumerate(nodes):
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes=2",
            "--nproc_per_node=1",
            f"--node_rank={rank}",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint=127.0.0.1:{port}",
            "--rdzv-id=t",
            "-m",
            "gsg_zoo",
            "pretrain",
            "demo",
            "--out",
            "run",
            "--no-progress",
        ]
        for s in overrides:
            cmd += ["--set", s]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
        procs.append(
            subprocess.Popen(
                cmd, cwd=node, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
            )
        )
    outputs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode != 0 for p in procs)
    assert all("storage that every node reads" in out for out in outputs), outputs[1][-3000:]


def test_resume_flag_only_seeds_an_empty_run_and_must_exist(tmp_path):
    base = [*TINY, "train.epochs=1", "monitor.every=-1", "train.max_steps_per_epoch=1"]
    with pytest.raises(ValueError, match="no such checkpoint"):
        Pretrainer(load_recipe("demo", base), tmp_path / "run", progress=False).run(
            resume_from=tmp_path / "nope.pt"
        )
    assert not (tmp_path / "run" / "checkpoints").exists(), "nothing was started"


def test_changed_recipe_key_is_refused_naming_it_and_config_history_is_kept(tmp_path):
    base = [*TINY, "train.epochs=1", "monitor.every=-1", "train.max_steps_per_epoch=1"]
    Pretrainer(load_recipe("demo", base), tmp_path / "run", progress=False).run()
    with pytest.raises(ValueError, match=r"optim\.lr: checkpoint 0\.1, now 0\.2"):
        Pretrainer(load_recipe("demo", [*base, "optim.lr=0.2"]), tmp_path / "run", progress=False).run()
    first = (tmp_path / "run" / "config.yaml").read_text()
    Pretrainer(load_recipe("demo", [*base, "train.epochs=2"]), tmp_path / "run", progress=False).run()
    assert (tmp_path / "run" / "config.1.yaml").read_text() == first  # the allowed change keeps the old one
    mode = stat.S_IMODE((tmp_path / "run" / "checkpoints" / "last.pt").stat().st_mode)
    assert mode & 0o044 == 0o044, oct(mode)  # group and others may read results


def crash_and_resume_equals_uninterrupted(recipe, tmp_path, monkeypatch, crash_step: int = 10) -> dict:
    """Train ``recipe`` uninterrupted, then crash a second run before global step ``crash_step`` and
    rerun it; the two end states must be equal bit for bit. Returns the crashed run's last checkpoint."""
    Pretrainer(recipe, tmp_path / "full", progress=False).run()
    real_step = trainer_module.train_step

    def crash(*args, **kwargs):
        if kwargs["step"] == crash_step:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", crash)
    with pytest.raises(KeyboardInterrupt):
        Pretrainer(recipe, tmp_path / "crashed", progress=False).run()
    saved = torch.load(tmp_path / "crashed" / "checkpoints" / "last.pt", weights_only=True)
    monkeypatch.setattr(trainer_module, "train_step", real_step)
    Pretrainer(recipe, tmp_path / "crashed", progress=False).run()
    load = lambda out: torch.load(tmp_path / out / "checkpoints" / "last.pt", weights_only=True)  # noqa: E731
    assert_same_run(load("full"), load("crashed"))
    return saved


def test_crash_after_a_mid_epoch_checkpoint_resumes_bit_exactly(tmp_path, monkeypatch):
    """In one process: a step-based checkpoint inside epoch 2, a crash two steps later, a rerun."""
    run = [
        *TINY,
        "data.synthetic.num_images=48",
        "train.batch_size=8",
        "train.epochs=2",
        "monitor.every=-1",
        "data.loader.num_workers=0",
        "train.checkpoint_steps=8",
        "train.log_every=50",
    ]
    saved = crash_and_resume_equals_uninterrupted(load_recipe("demo", run), tmp_path, monkeypatch)
    assert (saved["epoch"], saved["step"], saved["epoch_step"]) == (1, 8, 2)


def test_nonfinite_loss_exits_65_and_a_restart_exits_65_at_once(tmp_path, monkeypatch):
    real_step = trainer_module.train_step

    def nan_step(*args, **kwargs):
        out = real_step(*args, **kwargs)
        out.loss = torch.full_like(out.loss, float("inf"))
        return out

    monkeypatch.setattr(trainer_module, "train_step", nan_step)
    args = ["pretrain", "demo", "--out", str(tmp_path / "run"), "--no-progress"]
    for s in [*TINY, "train.epochs=1", "monitor.every=-1", "train.max_steps_per_epoch=1"]:
        args += ["--set", s]
    assert cli.main(args) == EXIT_NONFINITE
    monkeypatch.setattr(trainer_module, "train_step", lambda *a, **k: pytest.fail("a restart must not train"))
    assert cli.main(args) == EXIT_NONFINITE and (tmp_path / "run" / NONFINITE_MARKER).exists()


def test_run_lock_refuses_a_live_job_and_takes_over_a_dead_ones(tmp_path):
    held = RunLock(tmp_path).acquire()
    with pytest.raises(RuntimeError, match="in use by another job"):
        RunLock(tmp_path).acquire()
    held.release()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    owner = {"host": socket.gethostname(), "pid": int(dead.stdout), "started": 0}
    (tmp_path / held.path.name).write_text(json.dumps(owner))
    assert RunLock(tmp_path).acquire().held  # the process that left it is gone


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.epochs=-1", r"train\.epochs=-1 is out of range: it must be >= 1"),
        ("train.batch_size=1", r"train\.batch_size=1 is out of range"),
        ("data.hue=0.9", r"data\.hue=0\.9 is out of range: it must be in \[0, 0\.5\]"),
    ],
)
def test_out_of_range_values_are_refused_before_anything_runs(override, message):
    with pytest.raises(ValueError, match=message):
        load_recipe("demo", [override])


def test_yaml_errors_name_file_line_and_column_and_out_must_be_a_directory(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: demo.yaml\ntrain:\n  epochs: [1, 2\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: YAML syntax error at line 4, column 1"):
        load_recipe(str(bad))
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["pretrain", "demo", "--out", str(tmp_path / "file")])
    assert exit_.value.code == 2 and "is a file" in capsys.readouterr().err


def test_batch_must_divide_and_per_device_batch_follows_world_size():
    assert trainer_module.global_batch_size(512, None, 8) == 512
    assert trainer_module.global_batch_size(512, 32, 6) == 192
    with pytest.raises(ValueError, match="elastic restart"):
        trainer_module.local_batch_size(512, 6)
    with pytest.raises(ValueError, match="per rank"):
        trainer_module.local_batch_size(8, 8)


@pytest.mark.parametrize("native,expected", [(True, torch.bfloat16), (False, torch.float16)])
def test_auto_precision_uses_bf16_only_where_native(monkeypatch, native, expected):
    """V100/T4 report bf16 support by emulation; auto must then choose fp16 with a grad scaler."""
    calls = []

    def supported(including_emulation: bool = True) -> bool:
        calls.append(including_emulation)
        return native or including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", supported)
    assert train_step.resolve_precision("auto", torch.device("cuda", 0)) is expected
    assert calls == [False]
    assert train_step.resolve_precision("auto", torch.device("cpu")) is None


def test_grad_scaler_state_survives_a_change_of_precision():
    fp16 = torch.amp.GradScaler("cpu", enabled=True)
    saved = fp16.state_dict()
    load_scaler_state(torch.amp.GradScaler("cpu", enabled=False), saved)  # fp16 -> bf16/fp32
    fresh = torch.amp.GradScaler("cpu", enabled=True)
    load_scaler_state(fresh, {})  # bf16/fp32 -> fp16: a fresh scale
    assert fresh.is_enabled()


def test_process_group_options_and_init(monkeypatch):
    cuda = distributed.process_group_options("cuda", 3, 7.5)
    assert cuda == {
        "backend": "nccl",
        "timeout": timedelta(minutes=7.5),
        "device_id": torch.device("cuda", 3),
    }
    assert distributed.process_group_options("cpu", 0, 30) == {
        "backend": "gloo",
        "timeout": timedelta(minutes=30),
    }
    seen = {}
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: bool(seen))
    monkeypatch.setattr(distributed.dist, "init_process_group", lambda **kw: seen.update(kw))
    monkeypatch.setattr(distributed.dist, "get_rank", lambda: 1)
    monkeypatch.setattr(distributed.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(distributed.dist, "destroy_process_group", lambda: seen.update(destroyed=True))
    monkeypatch.setattr(
        distributed, "attempt_store", lambda rank, world, timeout: ("store", rank, world, timeout)
    )
    info = distributed.init_distributed("cpu", timeout_minutes=12)
    assert (
        seen
        == {
            "backend": "gloo",
            "timeout": timedelta(minutes=12),
            "store": ("store", 1, 2, timedelta(minutes=12)),
            "rank": 1,
            "world_size": 2,
        }
        and info.owns_group
    )
    info.close()
    assert seen["destroyed"]


def test_backend_switches(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda flag: calls.append(flag))
    before = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    try:
        train_step.configure_backends(cudnn_benchmark=True, tf32=None, deterministic=True)
        assert calls == [True] and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        train_step.configure_backends(cudnn_benchmark=True, tf32=None, deterministic=False)
        assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = before


def test_sigterm_in_one_process_saves_and_exits_75(tmp_path, monkeypatch):
    run = [
        *TINY,
        "data.synthetic.num_images=48",
        "train.batch_size=8",
        "train.epochs=2",
        "monitor.every=-1",
        "data.loader.num_workers=0",
        "train.log_every=2",
    ]
    real_step = trainer_module.train_step

    def term_at_3(*args, **kwargs):
        if kwargs["step"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", term_at_3)
    with pytest.raises(SystemExit) as exit_:
        Pretrainer(load_recipe("demo", run), tmp_path / "run", progress=False).run()
    assert exit_.value.code == EXIT_PREEMPTED
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert (saved["epoch"], saved["step"], saved["epoch_step"]) == (0, 4, 4)
    assert json.loads((tmp_path / "run" / PREEMPTED_MARKER).read_text())["signal"] == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is removed again


def test_sigterm_at_the_last_step_of_an_epoch_keeps_the_epoch(tmp_path, monkeypatch):
    """A stop agreed on at the epoch's last step finishes the epoch (its checkpoint and metrics row)
    before exiting, instead of exiting with no checkpoint of the epoch's work."""
    run = [
        *TINY,
        "data.synthetic.num_images=48",
        "train.batch_size=8",
        "train.epochs=2",
        "monitor.every=-1",
        "data.loader.num_workers=0",
        "train.log_every=2",
    ]
    real_step = trainer_module.train_step

    def term_at_5(*args, **kwargs):  # step 5 is the last of epoch 1 (6 steps)
        if kwargs["step"] == 5:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "train_step", term_at_5)
    with pytest.raises(SystemExit) as exit_:
        Pretrainer(load_recipe("demo", run), tmp_path / "run", progress=False).run()
    assert exit_.value.code == EXIT_PREEMPTED
    saved = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)
    assert (saved["epoch"], saved["step"], saved["epoch_step"]) == (1, 6, 0)
    assert [row["epoch"] for row in saved["history"]] == [1]
    monkeypatch.setattr(trainer_module, "train_step", real_step)
    Pretrainer(load_recipe("demo", run), tmp_path / "run", progress=False).run()  # the rerun
    assert not (tmp_path / "run" / PREEMPTED_MARKER).exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_precision_deterministic_resume(tmp_path):
    """On a real GPU: auto precision picks bf16 on a native-bf16 device; a deterministic run crashed after
    a mid-epoch checkpoint and resumed equals the uninterrupted one bit for bit."""
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    expected = torch.bfloat16 if native else torch.float16
    assert train_step.resolve_precision("auto", torch.device("cuda")) is expected
    run = [
        *TINY,
        "data.synthetic.num_images=48",
        "train.batch_size=8",
        "train.epochs=2",
        "monitor.every=-1",
        "data.loader.num_workers=0",
        "train.checkpoint_steps=8",
        "train.deterministic=true",
        "train.device=cuda",
    ]
    Pretrainer(load_recipe("demo", run), tmp_path / "full", progress=False).run()
    real = trainer_module.train_step
    try:
        trainer_module.train_step = lambda *a, **k: (
            (_ for _ in ()).throw(KeyboardInterrupt) if k["step"] == 10 else real(*a, **k)
        )
        with pytest.raises(KeyboardInterrupt):
            Pretrainer(load_recipe("demo", run), tmp_path / "crashed", progress=False).run()
    finally:
        trainer_module.train_step = real
    Pretrainer(load_recipe("demo", run), tmp_path / "crashed", progress=False).run()
    load = lambda out: torch.load(tmp_path / out / "checkpoints" / "last.pt", weights_only=True)  # noqa: E731
    assert_same_run(load("full"), load("crashed"))
