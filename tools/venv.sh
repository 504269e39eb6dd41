#!/usr/bin/env bash
# Create (or reuse) the cached virtual environment and print its path.
# The venv lives outside the checkout, keyed by a hash of the dependency spec, so a fresh clone
# reuses it and a change of pins rebuilds it. Override the cache root with GSG_VENV_ROOT.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
root=${GSG_VENV_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/gsg-zoo/venvs}
# Set GSG_EXTRAS=none for the base stack only (no detectron2 / mmsegmentation).
extras=${GSG_EXTRAS:-det,seg}
key=$( (python3 -V; echo "$extras"; cat "$here/tools/requirements.lock" "$here/tools/install_detectron2.sh" \
  "$here/tools/install_mmseg.sh") | sha256sum | cut -c1-16)
venv="$root/$key"
mkdir -p "$root"
exec 9>"$root/$key.lock"
flock 9  # one build at a time; a second caller waits and then reuses it
if [ ! -f "$venv/.complete" ]; then
  echo "[venv] building $venv (a few minutes, once)" >&2
  rm -rf "$venv"; mkdir -p "$root"
  python3 -m venv "$venv"
  log="$root/$key.log"
  { "$venv/bin/python" -m pip install --upgrade "pip<27" \
    && "$venv/bin/python" -m pip install -r "$here/tools/requirements.lock"; } >"$log" 2>&1 \
    || { tail -40 "$log" >&2; echo "[venv] install failed, full log: $log" >&2; exit 1; }
  case ",$extras," in *,det,*)
    echo "[venv] building detectron2 (extra det)" >&2
    bash "$here/tools/install_detectron2.sh" "$venv/bin/python" >>"$log" 2>&1 \
      || { tail -40 "$log" >&2; echo "[venv] detectron2 install failed, full log: $log" >&2; exit 1; } ;;
  esac
  case ",$extras," in *,seg,*)
    echo "[venv] installing mmsegmentation (extra seg)" >&2
    bash "$here/tools/install_mmseg.sh" "$venv/bin/python" >>"$log" 2>&1 \
      || { tail -40 "$log" >&2; echo "[venv] mmseg install failed, full log: $log" >&2; exit 1; } ;;
  esac
  touch "$venv/.complete"
fi
# The package itself: editable, no deps, so a checkout always runs its own code.
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$here" >/dev/null 2>&1 \
  || "$venv/bin/python" -m pip install --no-deps --no-build-isolation -e "$here" >&2
echo "$venv"
