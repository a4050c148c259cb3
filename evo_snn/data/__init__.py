"""Data stage: event files / images -> frames -> train / val / test splits.

``load_splits(dataset, data_root, cfg, seed)`` is the entry point; see
``python -m evo_snn.data describe --help`` for a summary of a data set.
Event data: ``synthetic``, ``nmnist``, ``dvs_gesture``; static images (direct
encoding): ``cifar10``, ``cifar100``, ``tiny_imagenet``, ``image_folder``. Each data
set is a :class:`~evo_snn.data.registry.DatasetSpec` in the registry
(:mod:`evo_snn.data.registry`). Every reader raises :class:`DatasetFormatError`
on a missing or malformed file.
"""

from evo_snn.data import cache
from evo_snn.data.augment import SeqTransform
from evo_snn.data.errors import DatasetFormatError
from evo_snn.data.events import Events, downsample_frames, integrate_frames
from evo_snn.data.frameset import FrameSet
from evo_snn.data.registry import DatasetSpec, dataset_names, get_dataset, register_dataset
from evo_snn.data.splits import DATASETS, EVENT_DATASETS, IMAGE_DATASETS, Splits, load_splits, stratified_split

__all__ = [
    "DATASETS",
    "EVENT_DATASETS",
    "IMAGE_DATASETS",
    "DatasetFormatError",
    "DatasetSpec",
    "Events",
    "FrameSet",
    "SeqTransform",
    "Splits",
    "cache",
    "dataset_names",
    "get_dataset",
    "register_dataset",
    "downsample_frames",
    "integrate_frames",
    "load_splits",
    "stratified_split",
]
