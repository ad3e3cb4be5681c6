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
# The talk3d command of TREE itself, not the installed one: its cli/ and data_prep/ folders are loaded as
# talk3d_cli / talk3d_prep (how pyproject.toml installs them); trees older than that import cli / data_prep.
IN_TREE='
import importlib.util, os, sys
def load(name, folder):
    folder = os.path.abspath(folder)
    spec = importlib.util.spec_from_file_location(name, os.path.join(folder, "__init__.py"),
                                                  submodule_search_locations=[folder])
    sys.modules[name] = module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
if "talk3d_cli" in open("pyproject.toml").read():
    load("talk3d_prep", "data_prep")
    load("talk3d_cli", "cli")
    from talk3d_cli.main import app
else:
    from cli.main import app
app()'
talk3d_in_tree() { (cd "$TREE" && PYTHONPATH="$TREE" python3 -c "$IN_TREE" "$@"); }
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
