#!/usr/bin/env bash
# clang-format (the checked-in .clang-format) holds one dialect across the tree.
set -uo pipefail
cd "$(dirname "$0")/.."
files=$(git ls-files 'src/*.cpp' 'src/*.h' 'tests/*.cpp' 'tests/*.h' 'bench/*.cpp' 'bench/*.h')
if ! clang-format --dry-run -Werror $files; then
  echo "format: run 'make format' (clang-format -i) and commit" >&2
  exit 1
fi
echo "format: ok"
