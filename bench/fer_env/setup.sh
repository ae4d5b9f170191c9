#!/usr/bin/env bash
# Create the separate venv with the `fer` package (TensorFlow) that bench/video_fps.py compares
# against. It never touches the project's .venv.
#
#   bench/fer_env/setup.sh [VENV]        # default: bench/fer_env/.venv-fer
#
# PYTHON picks the interpreter (default python3.11). Installs the pinned, complete list in
# requirements.txt with --no-deps (see there why), then smoke-tests fer's Haar detector and
# emotion model on a blank image. Re-running on an existing venv only re-checks it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${1:-$here/.venv-fer}"
python="${PYTHON:-python3.11}"

if [ ! -x "$venv/bin/python" ]; then
    echo "creating $venv with $python" >&2
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --disable-pip-version-check --quiet --no-deps -r "$here/requirements.txt"
TF_CPP_MIN_LOG_LEVEL=3 "$venv/bin/python" - <<'PY' 2>/dev/null
import numpy as np
from fer.fer import FER

faces = FER(mtcnn=False).detect_emotions(np.zeros((120, 120, 3), np.uint8), face_rectangles=[(30, 30, 60, 60)])
assert len(faces) == 1 and len(faces[0]["emotions"]) == 7, faces
PY
echo "fer venv ready: $venv/bin/python" >&2
