"""Regenerate hf_plasticity/assets/digits.npz from scikit-learn's ``load_digits`` (maintainers only).

The package ships scikit-learn's 1,797 8x8 digits so that ``hf-plasticity demo`` (and the ``digits`` data
set) work after a plain ``pip install hf-plasticity``, without scikit-learn. The pixels are integers
0..16, so they are stored losslessly as uint8; ``hf_plasticity.data.loaders.read_digits_arrays`` gives
back exactly scikit-learn's values (tests/data/test_loaders.py compares them with scikit-learn's).

    python scripts/make_digits_asset.py                 # rewrite the bundled file
    python scripts/make_digits_asset.py --out /tmp/d.npz

Needs scikit-learn (``pip install scikit-learn``). Licence notice: hf_plasticity/assets/LICENSES.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ASSET = ROOT / "hf_plasticity" / "assets" / "digits.npz"


def write_digits_asset(out: Path) -> Path:
    """Write scikit-learn's digits to ``out`` atomically; refuses values that uint8 would not keep exactly."""
    from sklearn.datasets import load_digits

    from hf_plasticity.io import atomic_write

    bunch = load_digits()
    images = np.asarray(bunch.images)
    labels = np.asarray(bunch.target)
    pixels = images.astype(np.uint8)
    targets = labels.astype(np.uint8)
    if not (np.array_equal(pixels, images) and np.array_equal(targets, labels)):
        raise SystemExit("scikit-learn's digits are no longer integers 0..255: the uint8 bundle would change them")

    def write(tmp: Path) -> None:
        with tmp.open("wb") as handle:  # a handle, so numpy does not append ".npz" to the temporary name
            np.savez_compressed(handle, images=pixels, labels=targets)

    return atomic_write(out, write)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ASSET, help=f"where to write (default: {ASSET})")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))  # this checkout's hf_plasticity, whatever is installed
    path = write_digits_asset(args.out)
    print(f"wrote {path} ({path.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
