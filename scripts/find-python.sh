#!/usr/bin/env bash
# Print the path of a Python >= 3.12 interpreter: PATH first, then pyenv's versions.
# egglog 14 needs 3.12; on these machines the default python3 is 3.11 and 3.12 comes via pyenv.
set -u
ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' 2>/dev/null; }
for c in python3.12 python3.13 python3; do
  p=$(command -v "$c" 2>/dev/null) && ok "$p" && { echo "$p"; exit 0; }
done
root=${PYENV_ROOT:-$HOME/.pyenv}
for p in $(ls -d "$root"/versions/3.1[2-9]*/bin/python 2>/dev/null | sort -V); do
  ok "$p" && { echo "$p"; exit 0; }
done
echo "error: no Python >= 3.12 found (install one, e.g. 'pyenv install 3.12')" >&2
exit 1
