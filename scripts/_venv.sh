# Shared set-up for scripts/test, scripts/demo and scripts/bench: create .venv if it is
# missing and install raftdir into it (editable, with the test extra). Quick when already
# installed: the install is skipped while setup.cfg and pyproject.toml are unchanged.
# Sourced, not run; leaves $VENV_PY pointing at the venv's python.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
VENV_PY="$ROOT/.venv/bin/python"
stamp=".venv/.raftdir-installed"
want="$(cat setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    "$VENV_PY" -m pip install --quiet --disable-pip-version-check -e ".[test]"
    echo "$want" > "$stamp"
fi
