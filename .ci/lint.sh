#!/usr/bin/env bash
# Lint and format checks (CONTRIBUTING.md): ruff's lint rules (pyproject.toml) on every Python file;
# ruff format and clang-format on the files changed since the formatters came in (LINT_BASE), so
# that the code is formatted as it is touched rather than in one commit that rewrites every line.
# Fix with: ruff check --fix . ; ruff format FILE ; clang-format -i FILE
set -euo pipefail
cd "$(dirname "$0")/.."

LINT_BASE=97530cd1ef3a73098d99eee33cd029ad72ce018d  # the last commit before the formatters
if ! git cat-file -e "$LINT_BASE^{commit}" 2>/dev/null; then
  echo "lint: commit $LINT_BASE (LINT_BASE) is not in this clone; a shallow clone? git fetch --unshallow" >&2
  exit 1
fi

ruff check .

# Files changed since LINT_BASE: committed, staged, unstaged and new (not ignored); not deleted.
mapfile -t changed < <({ git diff --name-only --diff-filter=d "$LINT_BASE"; git ls-files --others --exclude-standard; } | sort -u)
python_files=() cxx_files=()
for f in "${changed[@]}"; do
  [ -f "$f" ] || continue
  case "$f" in
    *.py) python_files+=("$f") ;;
    csrc/*.h|csrc/*.cpp|csrc/*.cu|csrc/*.cuh) cxx_files+=("$f") ;;
  esac
done
if [ "${#python_files[@]}" -gt 0 ]; then ruff format --check "${python_files[@]}"; fi
if [ "${#cxx_files[@]}" -gt 0 ]; then clang-format --dry-run --Werror "${cxx_files[@]}"; fi
echo "lint: ruff check on every Python file; formatting on ${#python_files[@]} Python and ${#cxx_files[@]} C++/CUDA files changed since ${LINT_BASE:0:7}"
