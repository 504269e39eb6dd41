"""The documentation is part of the product: it builds strictly, its code runs, its commands parse, its
links exist, its numbers come from the results files and its architecture table from the enforced layers.

A ```python block runs in a fresh process from an empty directory, unless its first line is
``# needs: <what and why>`` (data, a previous command's output, the network): then it is skipped, or,
when the first word after ``needs:`` is a path this test can provide (``runs/demo/export``: a tiny
export of a random ResNet-10-T, the architecture of ``make demo``), run with that path in place.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(p for p in DOCS.rglob("*.md") if "_build" not in p.parts)]
FENCE = re.compile(r"^```(\w+)[^\n]*\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
README_LIMIT = 8192


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_blocks(lang: str) -> list[tuple[str, str]]:
    """(``file:line``, code) of every fenced block of ``lang`` in the README and the docs."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for m in FENCE.finditer(text):
            if m.group(1) == lang:
                found.append((f"{page.relative_to(ROOT)}:{text[: m.start()].count(chr(10)) + 1}", m.group(2)))
    return found


def gsg_command_lines(blocks: list[tuple[str, str]]) -> list[tuple[str, list[str]]]:
    """(where, argv) of every ``gsg ...`` or ``... -m gsg_zoo ...`` command in shell blocks."""
    out = []
    for where, code in blocks:
        for line in code.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words[:1] == ["gsg"]:
                out.append((where, words[1:]))
            elif "-m" in words and "gsg_zoo" in words:
                out.append((where, words[words.index("gsg_zoo") + 1 :]))
    return out


def package_modules() -> set[str]:
    """Every module of the package as the architecture table names it (``eval/knn``, ``gsg_zoo``)."""
    pkg = ROOT / "gsg_zoo"
    names = {
        p.relative_to(pkg).with_suffix("").as_posix().removesuffix("/__init__") for p in pkg.rglob("*.py")
    }
    return {"gsg_zoo" if m == "__init__" else m for m in names}


def relative_links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text())  # links inside code blocks are code, not links
    return [t for t in LINK.findall(text) if not re.match(r"^(https?:|mailto:|#)", t)]


@pytest.fixture(scope="module", autouse=True)
def sphinx_build(request, tmp_path_factory):
    """The strict build, started in the background when this module starts (it overlaps the other
    checks); ``test_docs_build_strictly`` waits for it."""
    if not any(item.name == "test_docs_build_strictly" for item in request.session.items):
        yield None
        return
    out = tmp_path_factory.mktemp("html")
    cmd = [
        sys.executable,
        "-m",
        "sphinx",
        "-W",
        "--keep-going",
        "-q",
        "-E",
        "-b",
        "html",
        str(DOCS),
        str(out),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield proc, out
    if proc.poll() is None:
        proc.kill()
        proc.wait()


PYTHON_BLOCKS = code_blocks("python")
DEMO_EXPORT = "runs/demo/export"

# One process imports torch and timm once, then runs each block in a forked child with a fresh namespace
# and working directory (a block's imports and side effects do not reach the next block).
RUNNER = """
import json, os, sys, traceback
import timm, torch  # noqa: F401
for job in json.loads(open(sys.argv[1]).read()):
    pid = os.fork()
    if pid == 0:
        os.chdir(job["cwd"])
        log = os.open(job["log"], os.O_WRONLY | os.O_CREAT)
        os.dup2(log, 1), os.dup2(log, 2)
        try:
            exec(compile(job["code"], job["where"], "exec"), {"__name__": "__main__"})
            code = 0
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    open(job["log"] + ".rc", "w").write(str(os.waitstatus_to_exitcode(status)))
"""


def _needs(code: str) -> str | None:
    first = code.splitlines()[0] if code.strip() else ""
    return first[len("# needs:") :].strip() if first.startswith("# needs:") else None


@pytest.fixture(scope="module")
def python_block_runs(tmp_path_factory) -> dict[str, tuple[int, str]]:
    """``where -> (exit code, output)`` of every runnable block; ``runs/demo/export`` is a tiny stand-in
    for ``make demo``'s export (a random ResNet-10-T run, exported as the demo does)."""
    from test_export import make_run

    from gsg_zoo.zoo.export import export_checkpoint

    root = tmp_path_factory.mktemp("blocks")
    ckpt, _ = make_run(root / "run", backbone="resnet10t", dataset="fashion_mnist")
    export = export_checkpoint(ckpt, root / "export", verify=False)
    jobs = []
    for i, (where, code) in enumerate(PYTHON_BLOCKS):
        needs = _needs(code)
        if needs is not None and needs.split()[0].rstrip(",") != DEMO_EXPORT:
            continue
        cwd = root / f"block{i}"
        (cwd / DEMO_EXPORT).parent.mkdir(parents=True)
        (cwd / DEMO_EXPORT).symlink_to(export)
        jobs.append({"where": where, "code": code, "cwd": str(cwd), "log": str(root / f"block{i}.log")})
    (root / "jobs.json").write_text(json.dumps(jobs))
    env = {
        "PYTHONPATH": str(ROOT),
        "PATH": "/usr/bin:/bin",
        "HOME": str(root),
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
    }
    run = subprocess.run(
        [sys.executable, "-c", RUNNER, str(root / "jobs.json")],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return {j["where"]: (int(Path(j["log"] + ".rc").read_text()), Path(j["log"]).read_text()) for j in jobs}


@pytest.mark.parametrize("where,code", PYTHON_BLOCKS, ids=[w for w, _ in PYTHON_BLOCKS])
def test_python_blocks_run(where, code, python_block_runs):
    needs = _needs(code)
    if needs is not None:
        assert len(needs) > 10, f"{where}: say what the block needs and why"
        if where not in python_block_runs:
            pytest.skip(f"needs: {needs}")
    rc, output = python_block_runs[where]
    assert rc == 0, f"{where} failed:\n{output[-3000:]}"


def test_every_gsg_command_line_parses():
    from gsg_zoo.app.cli import build_parser

    lines = gsg_command_lines(code_blocks("bash"))
    assert len(lines) >= 20  # the guides' commands are found at all
    bad = []
    for where, argv in lines:
        try:
            build_parser().parse_args(argv)
        except SystemExit as exit_:
            if exit_.code:
                bad.append(f"{where}: gsg {' '.join(argv)}")
    assert not bad, "command lines the parser refuses:\n" + "\n".join(bad)


def test_the_command_check_catches_a_wrong_flag():
    from gsg_zoo.app.cli import build_parser

    ((where, argv),) = gsg_command_lines([("x", "gsg experiment claims --no-such-flag ROOT")])
    with pytest.raises(SystemExit):
        build_parser().parse_args(argv)


def test_the_documented_claims_data_option_reaches_the_recipe(monkeypatch):
    """``gsg experiment claims --data ROOT`` (the documented form) = ``--set data.root=ROOT``."""
    import gsg_zoo.app.experiments as experiments
    from gsg_zoo.app.cli import main

    seen = {}
    monkeypatch.setattr(experiments, "run_claims", lambda *a, **k: seen.setdefault("args", a) and {})
    monkeypatch.setattr(experiments, "claims_markdown", lambda report: "")
    assert main(["experiment", "claims", "--data", "/data/x", "--set", "train.epochs=1"]) == 0
    assert seen["args"][4] == ["data.root=/data/x", "train.epochs=1"]


def test_every_model_spec_prefix_is_documented():
    from gsg_zoo.zoo.load import CHECKPOINT_SUFFIXES, SCHEMES

    source = (ROOT / "gsg_zoo" / "zoo" / "load.py").read_text()
    build = source[source.index("def build_backbone(") :]
    prefixes = {f"{s}:" for s in SCHEMES} | set(re.findall(r'spec == "(\w+)"', build))
    page = (DOCS / "reference" / "model-specs.md").read_text()
    assert {"import:", "random:", "zoo:", "local-dir:", "hf-hub:", "pixels"} <= prefixes
    missing = [p for p in prefixes | set(CHECKPOINT_SUFFIXES) if f"`{p}" not in page]
    assert not missing, f"docs/reference/model-specs.md does not document {missing}"


def test_every_benchmark_script_is_documented():
    listed = (ROOT / "benchmarks" / "README.md").read_text()
    missing = [p.name for p in (ROOT / "benchmarks").glob("*.py") if f"`{p.name}`" not in listed]
    assert not missing, f"benchmarks/README.md does not describe {missing}"


def test_every_extra_is_documented():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for page in (ROOT / "README.md", DOCS / "install.md"):
        text = page.read_text()
        missing = [
            e
            for e in extras
            if f"`{e}`" not in text and f"[{e}]" not in text and f",{e}]" not in text and f"[{e}," not in text
        ]
        assert not missing, f"{page.relative_to(ROOT)} does not name the extras {missing}"


def test_every_relative_link_exists():
    missing = [
        f"{page.relative_to(ROOT)}: {target}"
        for page in PAGES
        for target in relative_links(page)
        if not (page.parent / target.split("#")[0]).exists()
    ]
    assert not missing, "broken links:\n" + "\n".join(missing)


def test_readme_is_short():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= README_LIMIT, (
        f"README.md is {size} bytes; keep it under {README_LIMIT}: move depth to docs/"
    )


def test_results_tables_equal_the_rendering_of_the_json_files():
    tables = _load("results_tables", ROOT / "tools" / "results_tables.py")
    assert tables.stale() == [], "run python tools/results_tables.py"


def test_architecture_table_lists_every_module_in_its_enforced_layer():
    gen = _load("gsg_docs", DOCS / "_ext" / "gsg_docs.py")
    arch = _load("test_architecture_layers", ROOT / "tests" / "test_architecture.py")
    rows = [r.split(" | ") for r in gen.architecture().splitlines()[2:]]
    table = {row[1].strip("`"): row[0].strip("| ") for row in rows}
    unplaced = sorted(package_modules() - set(table))
    assert not unplaced, f"modules in no layer of tests/test_architecture.py LAYERS: {unplaced}"
    assert set(table) == package_modules()
    for module, layer in table.items():
        top = "" if module == "gsg_zoo" else module.split("/")[0]
        assert top in arch.LAYERS[layer], f"{module} shown in layer {layer}, enforced elsewhere"


# Last: the background build has had the other checks' time to finish.
def test_docs_build_strictly(sphinx_build):
    """sphinx-build -W: any warning fails, including a broken cross-reference or heading anchor; the
    generated reference pages list every public name, recipe, dataset and module."""
    proc, out = sphinx_build
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-6000:]
    html = {
        page: (out / f"{page}.html").read_text()
        for page in (
            "reference/cli",
            "reference/api",
            "reference/recipes",
            "reference/datasets",
            "development",
        )
    }
    cli = re.sub(r"<[^>]+>", "", html["reference/cli"])
    assert "gsg experiment claims [-h]" in cli and "[--data ROOT]" in cli  # the parser, rendered
    import gsg_zoo
    from gsg_zoo.config.recipes import list_recipes
    from gsg_zoo.data.registry import DATASETS

    init = ast.parse((ROOT / "gsg_zoo" / "__init__.py").read_text())
    homes = {a.name: n.module for n in init.body if isinstance(n, ast.ImportFrom) for a in n.names}

    def public_home(name: str) -> str:
        return homes[name].lstrip(".")

    documented = {
        "reference/api": [f'id="gsg_zoo.{public_home(n)}.{n}"' for n in gsg_zoo.__all__],
        "reference/recipes": [
            f'<code class="docutils literal notranslate"><span class="pre">{r}</span>' for r in list_recipes()
        ],
        "reference/datasets": [f'<span class="pre">{d}</span>' for d in DATASETS],
        "development": [f'<span class="pre">{m}</span>' for m in package_modules()],
    }
    missing = [f"{page}: {m}" for page, marks in documented.items() for m in marks if m not in html[page]]
    assert not missing, "not documented:\n" + "\n".join(missing)
