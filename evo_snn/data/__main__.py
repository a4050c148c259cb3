"""``python -m evo_snn.data describe --dataset NAME``: print a data set summary as one JSON object."""

from __future__ import annotations

import argparse
import json
import sys

import torch

from evo_snn.config import ConfigError, load_config
from evo_snn.data.errors import DatasetFormatError
from evo_snn.data.frameset import FrameSet
from evo_snn.data.splits import DATASETS, load_splits


def _split_summary(fs: FrameSet, num_classes: int) -> dict:
    # for static images (encoding 'direct') "events" are the sum of the uint8 pixel values
    eps = fs.events_per_sample().to(torch.float64)
    return {
        "samples": len(fs),
        "class_counts": {str(c): n for c, n in fs.class_counts(num_classes).items()},
        "events_per_sample": {
            "min": int(eps.min()) if len(fs) else None,
            "mean": round(float(eps.mean()), 3) if len(fs) else None,
            "max": int(eps.max()) if len(fs) else None,
        },
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m evo_snn.data", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    d = sub.add_parser(
        "describe",
        help="load a data set and print its splits, class counts and events per sample as JSON",
        description="Load a data set as the search would (search_spaces/<dataset>.yaml plus --set overrides) "
        "and print one JSON object: dataset, layout (the file layout read, e.g. 'python_batches' or "
        "'image_folder' for CIFAR), encoding ('events', or 'direct' for static images repeated "
        "over T), num_classes, classes (names in label order, or null), frame_shape [T,C,H,W] and, per "
        "split (train/val/test), samples, "
        "class_counts and events_per_sample {min,mean,max} (for static images: the sum of the uint8 "
        "pixel values of a sample). A bad data root or file prints one 'error: ...' line and exits 2.",
    )
    d.add_argument("--dataset", required=True, choices=DATASETS, help="data set name")
    d.add_argument(
        "--data-root",
        default=None,
        metavar="PATH",
        help="folder of the real data: N-MNIST's folder with Train/ and Test/; the DvsGesture folder "
        "(or its parent); cifar-10-batches-py / cifar-100-python (or its parent), or a CIFAR image folder; "
        "tiny-imagenet-200 (or its parent); for image_folder a folder with train/<class>/ and "
        "test/<class>/; not used for synthetic",
    )
    d.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set data.frames=16 (value parsed as YAML); repeatable",
    )
    d.add_argument(
        "--seed", type=int, default=None, help="seed of the validation split and synthetic data (default: data.split_seed, else search.seed)"
    )
    d.add_argument("--progress", action="store_true", help="show a progress bar on stderr while parsing files")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.dataset, None, args.overrides)
        seed = cfg.split_seed() if args.seed is None else args.seed
        splits = load_splits(args.dataset, args.data_root, cfg.data, seed, progress=args.progress)
    except (DatasetFormatError, ConfigError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    summary = {
        "dataset": splits.name,
        "layout": splits.layout,
        "encoding": splits.train.encoding,
        "num_classes": splits.num_classes,
        "classes": list(splits.class_names) if splits.class_names is not None else None,
        "frame_shape": list(splits.frame_shape),
        "splits": {
            name: _split_summary(fs, splits.num_classes)
            for name, fs in (("train", splits.train), ("val", splits.val), ("test", splits.test))
        },
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
