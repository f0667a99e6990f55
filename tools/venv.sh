# Sourced by tools/demo and tools/test: create .venv if missing and install ckptkit with the
# extras named in $CKPTKIT_EXTRAS, again only when setup.py changed since the last install.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
fi
# one stamp per install: setup.py's hash and the extras installed
hash=$(sha1sum setup.py | cut -c1-12)
installed() {   # an install of this setup.py with every extra of $CKPTKIT_EXTRAS
    local stamp extra have
    for stamp in .venv/.ckptkit-installed-"$hash"-*; do
        [ -f "$stamp" ] || continue
        have="_${stamp##*-}_"
        for extra in ${CKPTKIT_EXTRAS//,/ }; do
            [[ "$have" == *"_${extra}_"* ]] || continue 2
        done
        return 0
    done
    return 1
}
if ! installed; then
    echo "installing ckptkit[$CKPTKIT_EXTRAS] into .venv ..." >&2
    .venv/bin/python -m pip install -q -e ".[$CKPTKIT_EXTRAS]"
    touch ".venv/.ckptkit-installed-$hash-${CKPTKIT_EXTRAS//,/_}"
fi
export PATH="$PWD/.venv/bin:$PATH"
