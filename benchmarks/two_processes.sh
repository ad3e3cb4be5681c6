#!/usr/bin/env bash
# Fit step time alone and beside a running render (two talk3d processes on one machine).
#
#   bash benchmarks/two_processes.sh DATA RUN AUDIO [TREE]
#
# DATA: a prepared dataset; RUN: a fitted run (rendered in a loop while the fit runs);
# AUDIO: the driving audio of that render; TREE: the source tree to run (default: this one;
# e.g. a worktree of an older revision, for old vs new). Prints the two "fit done" lines
# (150 steps each, median s/step); the fits write into a temporary folder.
set -euo pipefail
DATA=$(realpath "$1"); RUN=$(realpath "$2"); AUDIO=$(realpath "$3")
TREE=$(realpath "${4:-$(dirname "$0")/..}")
WORK=$(mktemp -d)
stop_loop() { if [[ -n ${LOOP:-} ]]; then kill "$LOOP" 2>/dev/null || true; wait "$LOOP" 2>/dev/null || true; pkill -f -- "$WORK/render.mp4" || true; fi; }
trap 'stop_loop; rm -rf "$WORK"' EXIT
talk3d_in_tree() { (cd "$TREE" && PYTHONPATH="$TREE" python3 -c 'from cli.main import app; app()' "$@"); }
fit_once() {
  rm -rf "$WORK/fit"
  talk3d_in_tree fit "$DATA" -o "$WORK/fit" --steps 150 --set final_val_frames=4 --set mouth_pretrain_steps=0 -q
  grep "fit done" "$WORK/fit/fit.log" | sed "s/^/$1: /"
}
fit_once alone
( while true; do talk3d_in_tree render "$RUN" "$AUDIO" -o "$WORK/render.mp4" --force -q || true; done ) &
LOOP=$!
sleep 8
fit_once "beside a render"
