"""Data stage: event files -> frames -> train / val / test splits.

``load_splits(dataset, data_root, cfg, seed)`` is the entry point; see
``python -m evo_snn.data describe --help`` for a summary of a data set.
"""

from .errors import DatasetFormatError
from .events import Events, downsample_frames, integrate_frames
from .splits import DATASETS, FrameSet, Splits, load_splits, stratified_split

__all__ = [
    "DATASETS",
    "DatasetFormatError",
    "Events",
    "FrameSet",
    "Splits",
    "downsample_frames",
    "integrate_frames",
    "load_splits",
    "stratified_split",
]
