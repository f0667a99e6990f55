# Sourced by tools/demo and tools/test: create .venv if missing and install ckptkit with the
# extras named in $CKPTKIT_EXTRAS, again only when setup.py changed since the last install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
fi
stamp=".venv/.ckptkit-installed-$(cat setup.py | sha1sum | cut -c1-12)-${CKPTKIT_EXTRAS//,/_}"
if [ ! -f "$stamp" ]; then
    echo "installing ckptkit[$CKPTKIT_EXTRAS] into .venv ..." >&2
    .venv/bin/python -m pip install -q -e ".[$CKPTKIT_EXTRAS]"
    touch "$stamp"
fi
export PATH="$PWD/.venv/bin:$PATH"
