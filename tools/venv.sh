#!/usr/bin/env bash
# Create (or reuse) the cached virtual environment and print its path.
# The venv lives outside the checkout, keyed by a hash of the dependency spec, so a fresh clone
# reuses it and a change of pins rebuilds it. Override the cache root with GSG_VENV_ROOT.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
root=${GSG_VENV_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/gsg-zoo/venvs}
key=$( (python3 -V; cat "$here/tools/requirements.lock") | sha256sum | cut -c1-16)
venv="$root/$key"
if [ ! -f "$venv/.complete" ]; then
  echo "[venv] building $venv (a few minutes, once)" >&2
  rm -rf "$venv"; mkdir -p "$root"
  python3 -m venv "$venv"
  log="$root/$key.log"
  { "$venv/bin/python" -m pip install --upgrade "pip<27" \
    && "$venv/bin/python" -m pip install -r "$here/tools/requirements.lock"; } >"$log" 2>&1 \
    || { tail -40 "$log" >&2; echo "[venv] install failed, full log: $log" >&2; exit 1; }
  touch "$venv/.complete"
fi
# The package itself: editable, no deps, so a checkout always runs its own code.
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$here" >/dev/null 2>&1 \
  || "$venv/bin/python" -m pip install --no-deps --no-build-isolation -e "$here" >&2
echo "$venv"
