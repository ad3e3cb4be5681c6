#!/usr/bin/env bash
# One-step installer for talk3d.
#   bash install.sh          # the tool
#   bash install.sh --dev    # the tool + test/lint tools
# Keeps an existing torch (e.g. a CUDA build on a GPU machine); otherwise installs
# torch==2.13.0 first so that pip never pulls an unpinned multi-GB CUDA torch.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
extras=()
for arg in "$@"; do
  case "$arg" in
    --dev) extras+=(dev) ;;
    --eval) extras+=(eval) ;;
    *) echo "install.sh: unknown option '$arg' (use --dev or --eval)" >&2; exit 2 ;;
  esac
done
spec="."
if ((${#extras[@]})); then spec=".[$(IFS=,; echo "${extras[*]}")]"; fi
if "$PY" -c "import torch" 2>/dev/null; then
  echo "install.sh: keeping installed torch $("$PY" -c 'import torch; print(torch.__version__)')"
else
  echo "install.sh: installing torch==2.13.0"
  "$PY" -m pip install --quiet "torch==2.13.0"
fi
"$PY" -m pip install --quiet -e "$spec"
echo "install.sh: talk3d installed ($("$PY" -m pip show talk3d 2>/dev/null | sed -n 's/^Version: //p'))"
