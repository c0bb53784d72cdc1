#!/usr/bin/env bash
# Prepare, before a GPU is lent, what benchmarks/gpu_session.sh needs on the GPU machine, which reaches no network:
#   1. wheels (Python 3.12, manylinux x86-64) of the packages this project imports that the machine's image lacks
#      (benchmarks/gpu_image_packages.txt lists the image's), at the versions this checkout's .venv tests with,
#      into the git-ignored folder .whl/ (one version of each; pure-Python packages published only as sdists are
#      built into a py3-none-any wheel here);
#   2. a scratch install of those wheels with pip's target-platform options, which proves each one installs on
#      that platform, and a check that every requirement they declare is met by the image or by another wheel;
#   3. the size of what travels (the tracked files, .whl/ and .released/) against the device tool's 64 MiB.
# The released code for the comparison is copied by hand, never committed:
#   git clone https://github.com/Whileherham/IMR-HSNet /tmp/r && cp -r /tmp/r .released && rm -rf .released/.git
# Usage: bash benchmarks/gpu_prepare.sh      (PYTHON=... to use another interpreter than .venv/bin/python)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-.venv/bin/python}
WHEELS=.whl
LIMIT_MB=64
# What this project imports (requirements.txt and their imports) that the GPU image lacks.
PACKAGES=(open_clip_torch grad-cam tensorboardX pycocotools ftfy ttach wcwidth)
PLATFORM=(--python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
          --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64
          --platform manylinux1_x86_64)

[ -x "$PY" ] || { echo "gpu_prepare: $PY not found; run 'make install' first (or set PYTHON=...)" >&2; exit 2; }
mkdir -p "$WHEELS"
for name in "${PACKAGES[@]}"; do
    version=$("$PY" -m pip show "$name" 2>/dev/null | awk '/^Version:/ {print $2}')
    [ -n "$version" ] || { echo "gpu_prepare: $name is not installed in $PY's environment; run 'make install'" >&2; exit 2; }
    stem=$(echo "$name" | tr 'A-Z-' 'a-z_')
    # One version of each package travels: a second one stops the whole install there.
    for old in "$WHEELS"/*.whl; do
        [ -e "$old" ] || continue
        base=$(basename "$old" | tr 'A-Z' 'a-z')
        case "$base" in "${stem}-${version}-"*) ;; "${stem}-"*) rm -f "$old"; echo "gpu_prepare: removed $old (not $version)";; esac
    done
    if "$PY" -m pip download -q --no-deps --only-binary=:all: "${PLATFORM[@]}" -d "$WHEELS" "$name==$version" 2>/dev/null; then
        echo "gpu_prepare: $name $version: wheel from the index"
    else
        "$PY" -m pip wheel -q --no-deps -w "$WHEELS" "$name==$version" 2>&1 | grep -v '^WARNING: Location' || true
        built=$(ls "$WHEELS"/"$stem"-"$version"-*.whl 2>/dev/null | head -1)
        case "$built" in
            *-py3-none-any.whl) echo "gpu_prepare: $name $version: built from the sdist ($(basename "$built"))";;
            *) echo "gpu_prepare: $name $version has no wheel for Python 3.12 manylinux x86-64 and is not pure Python" >&2; exit 1;;
        esac
    fi
done

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
"$PY" -m pip install -q --no-index --no-deps --no-compile --only-binary=:all: "${PLATFORM[@]}" \
    --target "$scratch/site" "$WHEELS"/*.whl 2>&1 | grep -v '^WARNING: Location' || true
installed=$(ls -d "$scratch"/site/*.dist-info 2>/dev/null | wc -l)
expected=$(ls "$WHEELS"/*.whl | wc -l)
[ "$installed" -eq "$expected" ] || { echo "gpu_prepare: scratch install gave $installed of $expected packages" >&2; exit 1; }
echo "gpu_prepare: scratch install of $expected wheels for Python 3.12 manylinux x86-64: ok"

"$PY" - "$WHEELS" benchmarks/gpu_image_packages.txt <<'PYCHECK'
"""Every requirement a carried wheel declares (extras and other-platform markers aside) is met by the image or a wheel."""
import re
import sys
import zipfile
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

wheels, image_list = Path(sys.argv[1]), Path(sys.argv[2])
available = {canonicalize_name(line.strip()) for line in image_list.read_text().splitlines()
             if line.strip() and not line.startswith("#")}
metadata = {}
for wheel in sorted(wheels.glob("*.whl")):
    with zipfile.ZipFile(wheel) as archive:
        name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        metadata[wheel.name] = archive.read(name).decode()
carried = {canonicalize_name(re.search(r"^Name: (.+)$", text, re.M).group(1)) for text in metadata.values()}
environment = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
               "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
               "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
missing = []
for wheel, text in metadata.items():
    for line in re.findall(r"^Requires-Dist: (.+)$", text, re.M):
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate(environment):
            continue
        if canonicalize_name(requirement.name) not in available | carried:
            missing.append(f"{wheel} needs {requirement}")
if missing:
    sys.exit("gpu_prepare: requirements met neither by the GPU image nor by a carried wheel:\n  " + "\n  ".join(missing))
print(f"gpu_prepare: every requirement of the {len(metadata)} wheels is in the GPU image or carried")
PYCHECK

tracked_kb=$(git ls-files -z | xargs -0 du -ck 2>/dev/null | tail -1 | cut -f1)
wheels_kb=$(du -sk "$WHEELS" | cut -f1)
released_kb=0
if [ -f .released/generate_cam_voc.py ]; then
    released_kb=$(du -sk --exclude=.git .released | cut -f1)
else
    echo "gpu_prepare: no .released/ (a copy of Whileherham/IMR-HSNet without .git, see the top of this script):" \
         "the GPU run then times ours only"
fi
total_kb=$((tracked_kb + wheels_kb + released_kb))
echo "gpu_prepare: travels: tracked files ${tracked_kb} KiB + .whl ${wheels_kb} KiB + .released ${released_kb} KiB" \
     "= $((total_kb / 1024)) MiB (limit ${LIMIT_MB} MiB)"
[ "$total_kb" -le $((LIMIT_MB * 1024)) ] || { echo "gpu_prepare: over the ${LIMIT_MB} MiB the device tool carries" >&2; exit 1; }
echo "gpu_prepare: ready: run(command=\"bash benchmarks/gpu_session.sh\", carry=[\".whl\", \".released\"], timeout_s=600)"
