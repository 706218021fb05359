"""The small labelled demo set bundled with aeflow: MNIST test digits and anomalies, uint8.

``python -m aeflow.export.demo_set --data-dir DIR --out artifacts/demo.npz`` writes
``images`` uint8 [N, 28, 28], ``is_anomaly`` bool [N] and ``source`` str [N].
"""

from __future__ import annotations

import argparse
import io
import os

import numpy as np

from aeflow.files import write_bytes_atomic
from aeflow.datasets import available, load_images


def make_demo_set(data_dir: str | os.PathLike | None, n_per_set: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """Draw ``n_per_set`` seeded images from the MNIST test set and from each anomaly test set
    (KMNIST where present, else Fashion-MNIST); returns the arrays to save."""
    rng = np.random.default_rng(seed)
    anomaly = "kmnist" if available("kmnist", "test", data_dir) and data_dir is not None else "fashion-mnist"
    parts = []
    for name in ("mnist", anomaly):
        images = load_images(name, "test", data_dir)
        parts.append(images[np.sort(rng.choice(len(images), size=n_per_set, replace=False))])
    return {"images": np.concatenate(parts), "is_anomaly": np.repeat([False, True], n_per_set),
            "source": np.repeat(["mnist-test", f"{anomaly}-test"], n_per_set)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None, help="IDX folder (default: torchvision download)")
    parser.add_argument("--out", default="artifacts/demo.npz")
    parser.add_argument("-n", type=int, default=1000, help="images per set")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    arrays = make_demo_set(args.data_dir, args.n, args.seed)
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    write_bytes_atomic(args.out, buf.getvalue(), replace=True)
    print(f"wrote {args.out}: {len(arrays['images'])} images "
          f"({int(arrays['is_anomaly'].sum())} anomalies from {arrays['source'][-1]})")


if __name__ == "__main__":
    main()
