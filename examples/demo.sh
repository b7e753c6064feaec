#!/usr/bin/env bash
# The demo's release steps, all through the shipml CLI (registry: $SHIPML_HOME).
set -euo pipefail
work=${1:-.demo}
shipml=.venv/bin/shipml
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step $shipml models
step $shipml evaluate cancer:1.0.0 --data "$work/test.csv" --target target
step $shipml evaluate cancer:1.1.0 --data "$work/test.csv" --target target
step $shipml promote cancer:1.0.0 production --require "accuracy>=0.9" --require "roc_auc>=0.95" \
    --data "$work/test.csv" --target target --reason "first release"
echo; echo "# the gate refuses a candidate that is worse than @production on the same data (exit code 1 expected):"
if $shipml promote cancer:1.1.0 production --require "accuracy>=0.99" --against @production \
    --data "$work/test.csv" --target target; then
    echo "unexpected: promotion passed"; exit 1
fi
step $shipml show cancer@production
step $shipml history cancer
step $shipml predict-sample cancer@production "$work/new_rows.csv" --proba
