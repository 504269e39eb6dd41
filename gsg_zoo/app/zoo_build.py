"""``gsg zoo build ENTRY``: one command from a planned zoo entry to a published checkpoint.

Stages, in order: ``pretrain`` (``gsg pretrain``; resumes itself), one ``eval:N`` per declared
evaluation (``gsg eval``, results JSON), ``export`` (``gsg export``), ``card`` (the evaluations'
results on the model card), and with ``push``: ``push`` (one Hub commit) and ``manifest`` (the zoo
entry, pinned to that commit). Each stage records its completion in ``OUT/build.json`` (written
atomically) and is skipped on a rerun, so a build killed anywhere continues where it stopped. Under
torchrun, pretraining runs on every rank; the other stages run on rank 0 while the others wait.
Entries are data: ``gsg_zoo/zoo/zoo_entries.yaml``.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..core.checkpoint import atomic_write
from ..zoo.report_results import card_results

STATE_FILE = "build.json"
ENTRIES_PATH = Path(__file__).resolve().parents[1] / "zoo" / "zoo_entries.yaml"


@dataclass(frozen=True)
class ZooEntry:
    """A planned zoo entry: how to train it, what its card reports, where it is published."""

    name: str
    recipe: str
    hub_id: str
    overrides: tuple[str, ...] = ()
    evaluations: tuple[dict[str, Any], ...] = field(default_factory=tuple)


def planned_entries(path: str | os.PathLike | None = None) -> dict[str, ZooEntry]:
    raw = yaml.safe_load(Path(path or ENTRIES_PATH).read_text())
    return {
        name: ZooEntry(
            name, e["recipe"], e["hub_id"], tuple(e.get("overrides", ())), tuple(e.get("evaluations", ()))
        )
        for name, e in raw.items()
    }


def eval_argv(entry: ZooEntry, i: int, ckpt: Path, data: str | None, out: Path) -> list[str]:
    """The ``gsg eval`` command line of the entry's ``i``-th evaluation."""
    ev = entry.evaluations[i]
    argv = [
        "eval",
        ev["eval"],
        "--model",
        str(ckpt),
        "--dataset",
        ev["dataset"],
        "--protocol",
        ev["protocol"],
        "--out",
        str(out),
        "--no-progress",
        *ev.get("options", ()),
    ]
    return argv + (["--data", data] if data else [])


class Build:
    """The stages of one entry's build in ``out``; :meth:`run` does what is not done yet."""

    def __init__(
        self,
        entry: ZooEntry,
        out: Path,
        data: str | None = None,
        push: bool = False,
        push_dry_run: bool = False,
    ) -> None:
        self.entry, self.out, self.data, self.push, self.push_dry_run = (
            entry,
            Path(out),
            data,
            push,
            push_dry_run,
        )
        self.state_path = self.out / STATE_FILE
        state = json.loads(self.state_path.read_text()) if self.state_path.exists() else {}
        if state and state.get("entry") != entry.name:
            raise ValueError(f"{self.out} holds the build of {state.get('entry')!r}, not {entry.name!r}")
        self.done: dict[str, Any] = state.get("done", {})

    @property
    def ckpt(self) -> Path:
        return self.out / "pretrain" / "checkpoints" / "last.pt"

    def plan(self) -> list[tuple[str, Callable[[], Any]]]:
        stages: list[tuple[str, Callable[[], Any]]] = [("pretrain", self.pretrain)]
        stages += [(f"eval:{i}", lambda i=i: self.evaluate(i)) for i in range(len(self.entry.evaluations))]
        stages += [("export", self.export), ("card", self.card)]
        if self.push_dry_run:  # plan the upload (no network, nothing recorded), as `gsg push --dry-run`
            return [*stages, ("push (dry run)", self.plan_push)]
        if self.push:
            return [*stages, ("push", self.push_export), ("manifest", self.add_to_manifest)]
        return stages

    def describe(self) -> str:
        lines = [
            f"zoo build {self.entry.name} in {self.out} (recipe {self.entry.recipe}, hub {self.entry.hub_id})"
        ]
        for name, _ in self.plan():
            lines.append(f"  {'done' if name in self.done else 'todo'}  {name}")
        return "\n".join(lines)

    def run(self, rank: int = 0, barrier: Callable[[], None] = lambda: None) -> dict[str, Any]:
        for name, stage in self.plan():
            if name in self.done:
                continue
            if name == "pretrain" or rank == 0:
                result = stage()
                _test_kill(name)
                if rank == 0 and not name.endswith("(dry run)"):
                    self.done[name] = result
                    self._save()
            barrier()
        return self.done

    def _save(self) -> None:
        state = {"entry": self.entry.name, "done": self.done}
        atomic_write(self.state_path, lambda p: Path(p).write_text(json.dumps(state, indent=2)))

    # ------------------------------------------------------------------ stages
    def pretrain(self) -> dict[str, Any]:
        from ..config.recipes import load_recipe
        from ..train.trainer import Pretrainer

        overrides = [*self.entry.overrides, *([f"data.root={self.data}"] if self.data else [])]
        summary = Pretrainer(
            load_recipe(self.entry.recipe, overrides), self.out / "pretrain", progress=False
        ).run()
        return {"epochs": summary["epochs"], "steps": summary["steps"]}

    def evaluate(self, i: int) -> dict[str, Any]:
        from .commands import eval as eval_command

        out = self.out / "evals" / str(i)
        status, args = eval_command.run(eval_argv(self.entry, i, self.ckpt, self.data, out)[1:])
        if status != 0:
            raise RuntimeError(f"evaluation {i} of {self.entry.name} failed (see above)")
        report = out / f"{eval_command.report_stem(args)}.json"
        return {"report": str(report.relative_to(self.out))}

    def export(self) -> dict[str, Any]:
        from ..zoo.export import export_checkpoint

        export_checkpoint(
            self.ckpt, self.out / "export", self.entry.name, hub_id=self.entry.hub_id, overwrite=True
        )
        return {"dir": "export"}

    def card(self) -> dict[str, Any]:
        from ..zoo.cards import write_model_card

        reports = [
            json.loads((self.out / self.done[f"eval:{i}"]["report"]).read_text())
            for i in range(len(self.entry.evaluations))
        ]
        subsets = ["--subset" in ev.get("options", ()) for ev in self.entry.evaluations]
        results = [r for report, subset in zip(reports, subsets) for r in card_results(report, subset)]
        write_model_card(self.out / "export", self.entry.name, {"results": results}, hub_id=self.entry.hub_id)
        return {"results": len(results)}

    def plan_push(self) -> None:
        from ..zoo.hub import push_export

        plan, _ = push_export(self.out / "export", self.entry.hub_id, dry_run=True)
        print("dry run: nothing uploaded, no network used\n" + plan.describe())

    def push_export(self) -> dict[str, Any]:
        from ..zoo.hub import push_export

        _, commit = push_export(self.out / "export", self.entry.hub_id)
        return {"revision": commit["oid"]}

    def add_to_manifest(self) -> dict[str, Any]:
        from ..zoo.manifest import add_entry

        add_entry(
            self.out / "export",
            self.entry.hub_id,
            name=self.entry.name,
            revision=self.done["push"]["revision"],
            replace=True,
        )
        return {"name": self.entry.name}


def _test_kill(stage: str) -> None:
    """Tests only: SIGKILL this process after ``stage``'s work, before it is recorded."""
    if os.environ.get("GSG_TEST_KILL_STAGE") == stage:
        os.kill(os.getpid(), signal.SIGKILL)
