#!/usr/bin/env bash
# Install the segmentation extra (mmsegmentation on mmcv-lite) into the environment of PYTHON.
#
#   bash tools/install_mmseg.sh PYTHON      e.g. bash tools/install_mmseg.sh "$V/bin/python"
#
# mmsegmentation 1.2.2 + mmengine 0.10.7 + mmcv-lite 2.1.0 (pure Python, no compiled ops), all wheels
# from PyPI, ~30 s. mmseg imports `ftfy` and `regex` without declaring them. Every package the three
# pull in is pinned below (resolved on 2026-11-22 with torch 2.14.1 and numpy 2.4), so the install is
# reproducible. gsg-zoo's `gsg transfer segmentation` applies a small mmcv.ops shim
# (gsg_zoo/transfer/mmseg_compat.py) because mmcv-lite lacks mmcv._ext; what that excludes is listed in
# configs/mmseg/README.md. If full mmcv (with compiled ops) is already installed, the script leaves
# it alone and installs only mmengine/mmsegmentation and the rest.
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 PYTHON   (the interpreter of the environment to install into)" >&2
  exit 2
fi
py=$1
# the repository root: the check below imports gsg_zoo.transfer.mmseg_compat before gsg-zoo is installed
repo=$(cd "$(dirname "$0")/.." && pwd)
if ! "$py" -c "import torch" >/dev/null 2>&1; then
  echo "[mmseg] $py cannot import torch: install torch first" >&2
  exit 1
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gsg-mmseg.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/constraints.txt" <<'PINS'
mmengine==0.10.7
mmcv-lite==2.1.0
mmsegmentation==1.2.2
ftfy==6.3.1
regex==2026.11.15
addict==2.4.0
markdown-it-py==4.3.0
mdurl==0.1.2
opencv-python==5.0.0.93
platformdirs==4.14.7
prettytable==3.18.0
rich==15.0.0
termcolor==3.3.0
wcwidth==0.9.4
yapf==0.43.0
setuptools<81
PINS
mmcv=mmcv-lite
if "$py" -c "import importlib.util as u, sys; sys.exit(0 if u.find_spec('mmcv._ext') else 1)" 2>/dev/null; then
  echo "[mmseg] full mmcv with compiled ops found: keeping it" >&2
  mmcv=
fi
# shellcheck disable=SC2086
"$py" -m pip install -c "$tmp/constraints.txt" mmengine $mmcv mmsegmentation ftfy regex
"$py" -m pip check
PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}" "$py" - <<'PY'
from gsg_zoo.transfer import mmseg_compat

shim = mmseg_compat.apply()
import mmcv, mmengine, mmseg, mmseg.models  # noqa: E401,F401

print(f"[mmseg] ok: mmsegmentation {mmseg.__version__}, mmengine {mmengine.__version__}, mmcv {mmcv.__version__}"
      f" ({'pure-Python mmcv.ops shim' if shim else 'compiled ops'})")
PY
