#!/usr/bin/env bash
# Install Detectron2 v0.6 (pure Python, no compiled _C) into the environment of PYTHON.
#
#   bash tools/install_detectron2.sh PYTHON      e.g. bash tools/install_detectron2.sh "$V/bin/python"
#
# Detectron2 is not on PyPI under its own name. The sdist `pb1-detectron2==0.6` is upstream v0.6's
# Python code without the C++ sources. This script fetches it (pinned by sha256), patches a temporary
# copy so it installs with current torch/numpy/Pillow, and pip-installs it with pinned dependencies:
#   1. setup.py: no C++ extension; package_data globs the model_zoo configs it ships (the stock glob
#      misses them); drop the `all` extra's direct-URL dependency (panopticapi) that pip refuses;
#   2. `from detectron2 import _C` becomes optional (deformable conv, rotated boxes and the fast C++
#      COCOeval are unavailable; Faster/Mask R-CNN C4/FPN use torchvision's ROIAlign and NMS);
#   3. numpy's removed aliases np.int/np.bool/np.float/np.str -> builtins; Pillow's Image.LINEAR ->
#      Image.BILINEAR.
# The sdist is fetched with urllib and checked against its sha256 because `pip download` refuses it (its
# `all` extra declares a direct-URL dependency). Nothing is patched outside the temporary build directory. If `import detectron2` already works
# (e.g. a GPU build from source), the script does nothing. Set D2_SDIST=/path/pb1-detectron2-0.6.tar.gz
# to install from a local copy of the sdist (offline); its sha256 is checked as well.
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 PYTHON   (the interpreter of the environment to install into)" >&2
  exit 2
fi
py=$1
if ! "$py" -c "import torch" >/dev/null 2>&1; then
  echo "[detectron2] $py cannot import torch: install torch first" >&2
  exit 1
fi
if have=$("$py" -c "import detectron2, os; print(detectron2.__version__, os.path.dirname(detectron2.__file__))" 2>/dev/null); then
  echo "[detectron2] already installed ($have): nothing to do" >&2
  exit 0
fi

sdist_url=https://files.pythonhosted.org/packages/60/26/48f5bbb7ee492696a21da23303daeecdfe3942c498a70d34108acf63b2bd/pb1-detectron2-0.6.tar.gz
sdist_sha256=5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29

tmp=$(mktemp -d "${TMPDIR:-/tmp}/gsg-detectron2.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Pins for everything detectron2 0.6 pulls in (resolved on 2026-11-22 with torch 2.14.1, numpy 2.4).
# Packages it shares with the base stack (numpy, Pillow, matplotlib and its deps, tqdm, PyYAML, click,
# packaging, MarkupSafe) are left to tools/requirements.lock so that this step never moves them.
cat >"$tmp/constraints.txt" <<'PINS'
setuptools==80.10.2
pycocotools==2.0.11
fvcore==0.1.5.post20221221
iopath==0.1.9
portalocker==4.4.2
yacs==0.1.8
tabulate==0.10.0
termcolor==3.3.0
cloudpickle==3.1.2
future==1.0.0
pydot==4.0.1
omegaconf==2.3.1
hydra-core==1.3.8
antlr4-python3-runtime==4.9.3
black==21.4b2
regex==2026.11.15
appdirs==1.4.4
mypy_extensions==1.2.0
pathspec==0.12.1
toml==0.10.2
tensorboard==2.21.0
tensorboard-data-server==0.7.2
grpcio==1.85.1
protobuf==7.36.2
absl-py==2.5.1
Markdown==3.11.3
Werkzeug==3.1.9
PINS

echo "[detectron2] fetching pb1-detectron2 0.6 sdist" >&2
"$py" - "$tmp/d2.tar.gz" "$sdist_url" "$sdist_sha256" "${D2_SDIST:-}" <<'PYEOF'
import hashlib, shutil, sys, urllib.request
dest, url, sha, local = sys.argv[1:5]
if local:
    shutil.copyfile(local, dest)
else:
    with urllib.request.urlopen(url, timeout=120) as r, open(dest, "wb") as f:
        shutil.copyfileobj(r, f)
got = hashlib.sha256(open(dest, "rb").read()).hexdigest()
if got != sha:
    sys.exit(f"[detectron2] sha256 mismatch for {local or url}: {got} != {sha}")
PYEOF
tar -xzf "$tmp/d2.tar.gz" -C "$tmp"
src="$tmp/pb1-detectron2-0.6"

echo "[detectron2] patching a temporary copy" >&2
"$py" - "$src" <<'PYEOF'
import pathlib, re, sys
src = pathlib.Path(sys.argv[1])

def sub(path, old, new, count=1):
    p = src / path
    text = p.read_text()
    if text.count(old) != count:
        sys.exit(f"[detectron2] patch failed: expected {count}x {old!r} in {path}")
    p.write_text(text.replace(old, new))

sub("setup.py", "    ext_modules=get_extensions(),\n", "")
sub("setup.py", '    package_data={"detectron2.model_zoo": get_model_zoo_configs()},',
    '    package_data={"detectron2.model_zoo": ["configs/**/*.yaml", "configs/**/*.py"]},')
sub("setup.py", '            "panopticapi @ https://github.com/cocodataset/panopticapi/archive/master.zip",\n', "")
optional_c = (
    "try:\n    from detectron2 import _C\n"
    "except ImportError:  # installed without the C++ extension (tools/install_detectron2.sh)\n    _C = None\n"
)
for path in ("detectron2/layers/deform_conv.py", "detectron2/layers/rotated_boxes.py",
             "detectron2/layers/roi_align_rotated.py", "detectron2/evaluation/fast_eval_api.py"):
    sub(path, "from detectron2 import _C\n", optional_c)
alias = re.compile(r"\bnp\.(int|bool|float|str)\b")
changed = 0
for p in (src / "detectron2").rglob("*.py"):
    text = p.read_text()
    new = alias.sub(r"\1", text).replace("Image.LINEAR", "Image.BILINEAR")
    if new != text:
        p.write_text(new)
        changed += 1
if changed == 0:
    sys.exit("[detectron2] patch failed: no numpy/Pillow aliases found (unexpected sdist content)")
PYEOF

echo "[detectron2] installing (about a minute)" >&2
"$py" -m pip install -q -c "$tmp/constraints.txt" "setuptools<81"
"$py" -m pip install -q -c "$tmp/constraints.txt" --no-build-isolation "$src"
"$py" - <<'PYEOF'
import detectron2
from detectron2 import model_zoo
from detectron2.modeling import build_model  # noqa: F401
model_zoo.get_config_file("PascalVOC-Detection/faster_rcnn_R_50_C4.yaml")
print(f"[detectron2] installed {detectron2.__version__} (no _C) at {detectron2.__path__[0]}")
PYEOF
