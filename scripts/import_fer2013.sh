#!/usr/bin/env bash
# Import the full FER2013 into data/fer2013 and version it with DVC.
#
# Why: the full data set (tens of MB, ~32k faces) must not go into git; the bundled sample
# (data/sample/fer2013) stays in git as the embedded default. `dvc add` records the folder's
# content hash in data/fer2013.dvc (committed to git) and `dvc push` stores the files in the
# default DVC remote, so any clone gets exactly this version back with `dvc pull`.
#
# Usage: scripts/import_fer2013.sh [--no-push] SOURCE [DEST]
#   SOURCE  a tarball (.tar, .tar.gz/.tgz, .tar.bz2, .tar.xz), a .zip, an image folder
#           (train/<class>/..., val/<class>/...) or a fer2013.csv
#   DEST    default data/fer2013 (relative to the repository root)
# A single wrapping folder (fer2013/train/... in the Kaggle tarball) is unwrapped, so DEST itself
# is the data root. Re-importing replaces DEST only when it is already DVC-tracked (DEST.dvc
# exists: the previous version stays in the DVC cache and in git history) or empty.
set -euo pipefail

push=1
if [[ "${1:-}" == "--no-push" ]]; then
    push=0
    shift
fi
if [[ $# -lt 1 || $# -gt 2 || "$1" == -* ]]; then
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
fi

source_path="$(realpath -- "$1")"
[[ -e "$source_path" ]] || { echo "error: $1: not found" >&2; exit 2; }
repo_root="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
dest="${2:-data/fer2013}"
dest="${dest%/}"

dvc="${DVC:-}"
if [[ -z "$dvc" ]]; then
    if [[ -x .venv/bin/dvc ]]; then dvc=.venv/bin/dvc; else dvc=dvc; fi
fi
[[ -d .dvc ]] || { echo "error: $repo_root is not a DVC repository (run: dvc init)" >&2; exit 2; }

if [[ -e "$dest" && ! -f "$dest.dvc" && -n "$(ls -A -- "$dest" 2>/dev/null)" ]]; then
    echo "error: $dest exists, is not empty and is not DVC-tracked ($dest.dvc missing); move it away first" >&2
    exit 2
fi

# Unpack next to DEST, then swap it in: a failed import leaves the previous version intact.
mkdir -p "$(dirname -- "$dest")"
staging="$(mktemp -d "$(dirname -- "$dest")/.import-fer2013.XXXXXX")"
trap 'rm -rf -- "$staging"' EXIT

case "$source_path" in
    *.tar | *.tar.gz | *.tgz | *.tar.bz2 | *.tbz2 | *.tar.xz | *.txz)
        tar -xf "$source_path" -C "$staging" ;;
    *.zip)
        python3 -m zipfile -e "$source_path" "$staging" ;;
    *.csv)
        cp -- "$source_path" "$staging/fer2013.csv" ;;
    *)
        if [[ -d "$source_path" ]]; then
            cp -R -- "$source_path/." "$staging/"
        else
            echo "error: $1: expected a tarball, .zip, folder or .csv" >&2
            exit 2
        fi ;;
esac

# Unwrap a single top-level folder (fer2013/train/... -> train/...).
shopt -s dotglob nullglob
entries=("$staging"/*)
if [[ ${#entries[@]} -eq 1 && -d "${entries[0]}" ]]; then
    inner="${entries[0]}"
    unwrapped="$(mktemp -d "$(dirname -- "$dest")/.import-fer2013.XXXXXX")"
    rmdir -- "$unwrapped"
    mv -- "$inner" "$unwrapped"
    rmdir -- "$staging"
    staging="$unwrapped"
    trap 'rm -rf -- "$staging"' EXIT
fi
shopt -u dotglob nullglob
[[ -n "$(ls -A -- "$staging")" ]] || { echo "error: $1: nothing to import" >&2; exit 2; }

rm -rf -- "$dest"
mv -- "$staging" "$dest"
trap - EXIT
echo "imported $(find "$dest" -type f | wc -l) files into $dest"

"$dvc" add "$dest"
if [[ $push -eq 1 ]]; then
    "$dvc" push "$dest.dvc"
fi

cat <<EOF

Next:
  git add $dest.dvc && git commit -m "Data: FER2013 ($dest, DVC-tracked)"
  # train on it directly:
  emonext train --set data.root=$dest
  # or feed it to the pipeline (clean -> split -> train ...): in params.yaml set
  #   clean.sources[0].path: $dest      then: dvc repro
EOF
