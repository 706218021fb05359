"""The labelled demo set bundled with aeflow (``python -m aeflow.export.demo_set --data-dir DIR``):
``images`` uint8 [N, 28, 28], ``is_anomaly`` bool [N], ``source`` str [N]."""

import argparse

import numpy as np

from aeflow.datasets import available, load_images
from aeflow.files import atomic_path


def make_demo_set(data_dir: str | None, n_per_set: int = 1000, seed: int = 0) -> dict[str, np.ndarray]:
    """``n_per_set`` seeded MNIST test images, then as many anomalies (KMNIST's where present, else Fashion-MNIST's)."""
    rng = np.random.default_rng(seed)
    anomaly = "kmnist" if available("kmnist", "test", data_dir) and data_dir is not None else "fashion-mnist"
    sets = [load_images(name, "test", data_dir) for name in ("mnist", anomaly)]
    parts = [images[np.sort(rng.choice(len(images), size=n_per_set, replace=False))] for images in sets]
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
    with atomic_path(args.out, replace=True) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    print(f"wrote {args.out}: {len(arrays['images'])} images, {arrays['is_anomaly'].sum()} anomalies")


if __name__ == "__main__":
    main()
