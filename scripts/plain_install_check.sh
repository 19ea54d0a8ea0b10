#!/usr/bin/env bash
# Does a plain `pip install hf-plasticity` work? Builds the sdist and, from it, the wheel; checks that both
# carry the licence; installs the wheel WITHOUT extras into a fresh venv (CPU torch first); then, from a
# folder outside this repository (so nothing can import the source tree), runs `hf-plasticity demo`,
# measures a random hidden-768 ViT with bounds and round-trips a PlasticityConfig adapter
# (scripts/plain_install_check.py). Exits non-zero on the first failure. .ci/run calls it after the tests.
#   bash scripts/plain_install_check.sh
# Set TORCH_INDEX_URL as for scripts/setup.sh where pip's default index would serve a CUDA build of torch.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python_bin="${PYTHON:-python3}"
start=$SECONDS
# The venv holds ~1.6 GB in ~20,000 files: on a disk mounted with `discard` deleting them takes minutes,
# so it goes to memory (/dev/shm) when at least 4 GiB are free there.
scratch="${TMPDIR:-/tmp}"
if [ -d /dev/shm ] && [ -w /dev/shm ] && [ "$(df -Pk /dev/shm | awk 'NR == 2 {print $4}')" -ge 4194304 ]; then
  scratch=/dev/shm
fi
work="$(mktemp -d "$scratch/hf-plasticity-plain.XXXXXX")"
trap 'rm -rf "$work"; echo "[plain-install $((SECONDS - start))s] cleaned up"' EXIT
unset PYTHONPATH  # the installed wheel, and only it
step() { echo "[plain-install $((SECONDS - start))s] $*"; }
pip() { "$1" -m pip --disable-pip-version-check -q "${@:2}"; }

step "building the sdist and the wheel (python -m build: the wheel is built from the sdist)"
"$python_bin" -m venv "$work/tools"
pip "$work/tools/bin/python" install build
"$work/tools/bin/python" -m build --outdir "$work/dist" "$root" >"$work/build.log" 2>&1 \
  || { cat "$work/build.log"; exit 1; }
sdists=("$work"/dist/hf_plasticity-*.tar.gz)
wheels=("$work"/dist/hf_plasticity-*.whl)
"$work/tools/bin/python" - "${sdists[0]}" "${wheels[0]}" <<'EOF'
import sys, tarfile, zipfile

sdist, wheel = sys.argv[1:]
with tarfile.open(sdist) as tar:
    sdist_names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
with zipfile.ZipFile(wheel) as whl:
    wheel_names = set(whl.namelist())
    metadata = next(whl.read(n).decode() for n in wheel_names if n.endswith(".dist-info/METADATA"))
dist_info = next(n.split("/", 1)[0] for n in wheel_names if n.endswith(".dist-info/METADATA"))
needed = {
    "sdist": (sdist_names, ["LICENSE", "hf_plasticity/assets/LICENSES.md", "hf_plasticity/assets/digits.npz"]),
    "wheel": (
        wheel_names,
        [
            f"{dist_info}/licenses/LICENSE",
            f"{dist_info}/licenses/hf_plasticity/assets/LICENSES.md",
            "hf_plasticity/assets/LICENSES.md",
            "hf_plasticity/assets/digits.npz",
            "hf_plasticity/assets/vit-fashion-mnist/model.safetensors",
        ],
    ),
}
missing = [f"{kind}: {name}" for kind, (names, wanted) in needed.items() for name in wanted if name not in names]
if missing or "License-Expression: Apache-2.0" not in metadata:
    sys.exit(f"plain-install check FAILED: the distributions lack {missing or 'License-Expression: Apache-2.0'}")
print("ok: the sdist and the wheel carry LICENSE (Apache-2.0) and the assets' LICENSES.md")
EOF

step "installing torch (CPU) and the wheel, no extras, into a fresh venv"
# --no-compile: no bytecode for every installed file up front; Python compiles what it imports
"$python_bin" -m venv "$work/venv"
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  pip "$work/venv/bin/python" install --no-compile "torch==2.13.0" --index-url "$TORCH_INDEX_URL"
else
  pip "$work/venv/bin/python" install --no-compile "torch==2.13.0"
fi
pip "$work/venv/bin/python" install --no-compile "${wheels[0]}"

cp "$root/scripts/plain_install_check.py" "$work/check.py"
cd "$work"  # outside the repository
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
step "hf-plasticity demo"
"$work/venv/bin/hf-plasticity" demo --out-dir "$work/demo" --no-progress
step "hidden-768 measurement with bounds, adapter round trip"
"$work/venv/bin/python" "$work/check.py" --demo-report "$work/demo/report.json"
step "done"
