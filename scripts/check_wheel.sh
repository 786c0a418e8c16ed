#!/usr/bin/env bash
# Build axr's abi3 wheel and check that it works where no Rust toolchain or source tree is:
# installed into a fresh venv (only the data path's dependencies), `import axr._native` and
# `axr version` run from outside the repository. Usage: scripts/check_wheel.sh [PYTHON]
# (PYTHON: the interpreter with maturin, default .venv/bin/python).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
python=${1:-$repo/.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# maturin: next to the interpreter (a venv's own), else on PATH (installed outside the venv).
maturin=$(dirname "$python")/maturin
[[ -x $maturin ]] || maturin=$(command -v maturin)
(cd "$repo" && "$maturin" build --release --quiet --out "$work/dist")
wheels=("$work"/dist/axr-*.whl)
if [[ ${#wheels[@]} -ne 1 || ${wheels[0]} != *-abi3-* ]]; then
    echo "check_wheel: expected one abi3 wheel, got: ${wheels[*]}" >&2
    exit 1
fi
echo "check_wheel: built $(basename "${wheels[0]}")"

"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet "${wheels[0]}"
cd "$work"  # not the repository: the installed package must be the one imported
"$work/venv/bin/python" -c '
import axr, axr._native, axr.packing
assert "site-packages" in axr.__file__, axr.__file__
print("check_wheel: import axr._native from", axr._native.__file__)
'
"$work/venv/bin/axr" version
echo "check_wheel: ok"
