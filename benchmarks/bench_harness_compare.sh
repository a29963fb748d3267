#!/usr/bin/env bash
# The harness overhead (benchmarks/bench_harness.py: harness / hand-written loop, eager step on
# both sides) of an earlier commit and of this checkout, alternately, in one session:
#   bash benchmarks/bench_harness_compare.sh [COMMIT] > docs/results/bench_harness_compare.txt
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE="${1:-d4a3a5e}"
TREE="$(mktemp -d)/before"
git worktree add --detach "$TREE" "$BEFORE" >/dev/null 2>&1
trap 'git worktree remove --force "$TREE" >/dev/null 2>&1 || true' EXIT
echo "bench_harness.py --repeats 5, rounds alternately: $BEFORE (before) and this checkout (after)"
for round in 1 2 3; do
  echo "## round $round, before"
  PYTHONPATH="$TREE/src" .venv/bin/python "$TREE/benchmarks/bench_harness.py" | grep "^ratio"
  echo "## round $round, after"
  .venv/bin/python benchmarks/bench_harness.py | grep "^ratio"
done
