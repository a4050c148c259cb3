"""DVS128 Gesture reader (Amir et al. 2017), the original distribution's layout.

``<root>/trials_to_train.txt`` and ``trials_to_test.txt`` list one ``<trial>.aedat``
per line; each trial has ``<trial>.aedat`` (AEDAT 3.1, see :mod:`.aedat`) and
``<trial>_labels.csv`` (``class,startTime_usec,endTime_usec``, classes 1-11).
Every CSV row is one sample: the events with ``start <= t < end``, label
``class - 1``, in file order (as spikingjelly's ``DVS128Gesture``: its
``split_aedat_files_to_np`` masks the decoded events per row, then integrates
each sample with :func:`~evo_snn.data.events.integrate_frames`). Sensor 128 x 128.

Quirks of the real data set, handled as spikingjelly does:

- several rows of one class in one trial (e.g. ``user26_fluorescent``): every
  row is its own sample;
- overlapping windows (e.g. ``user22_led``, where class 9 ends after class 10
  starts): an event inside two windows belongs to both samples.

The standard split is the trials lists: 1,176 training and 288 test samples for
the full data set (122 trials). A window without events, which spikingjelly
would turn into an empty sample (or a crash with ``split_by='time'``), is a
DatasetFormatError here.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from evo_snn.data.aedat import read_aedat31
from evo_snn.data.errors import DatasetFormatError, where_data_comes_from
from evo_snn.data.events import Events, downsample_frames, integrate_frames, stack_counts, to_storage
from evo_snn.data.registry import EventReaderSpec, register_dataset

NAME = "dvs_gesture"
HEIGHT = 128
WIDTH = 128
NUM_CLASSES = 11
FOLDER = "DvsGesture"
TRIAL_LISTS = {"train": "trials_to_train.txt", "test": "trials_to_test.txt"}
CSV_COLUMNS = ("class", "startTime_usec", "endTime_usec")
# label k = CSV class k + 1, as in the data set's README
CLASS_NAMES = ("hand_clapping", "right_hand_wave", "left_hand_wave", "right_arm_clockwise",
               "right_arm_counter_clockwise", "left_arm_clockwise", "left_arm_counter_clockwise", "arm_roll",
               "air_drums", "air_guitar", "other_gestures")


@dataclass(frozen=True)
class LabelWindow:
    """One labelled sample of a trial: events with ``start_us <= t < end_us``; ``label`` 0-based."""

    label: int
    start_us: int
    end_us: int
    line: int  # 1-based line in the CSV, for error messages


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as e:
        raise DatasetFormatError(f"{path}: {what} not found") from e
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetFormatError(f"{path}: cannot read {what} as UTF-8 text: {e}") from e


def read_labels_csv(path: str | Path) -> list[LabelWindow]:
    """Parse a ``<trial>_labels.csv``. Returns its windows in file order.

    raises DatasetFormatError naming the file and line: missing header columns,
    a non-integer field, a class outside 1-11, ``endTime_usec < startTime_usec``,
    or no rows at all.
    """
    path = Path(path)
    lines = _read_text(path, "labels CSV").splitlines()
    if not lines or not lines[0].strip():
        raise DatasetFormatError(f"{path}: line 1: expected the header {','.join(CSV_COLUMNS)}, got an empty line")
    header = [h.strip().lstrip("\ufeff") for h in lines[0].split(",")]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise DatasetFormatError(
            f"{path}: line 1: header is missing column(s) {missing}; expected {','.join(CSV_COLUMNS)}, got {lines[0]!r}"
        )
    cols = [header.index(c) for c in CSV_COLUMNS]
    windows: list[LabelWindow] = []
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        if len(fields) < len(header):
            raise DatasetFormatError(
                f"{path}: line {lineno}: expected {len(header)} comma-separated fields, got {len(fields)}: {line!r}"
            )
        values = []
        for name, c in zip(CSV_COLUMNS, cols):
            try:
                values.append(int(fields[c]))
            except ValueError:
                raise DatasetFormatError(
                    f"{path}: line {lineno}: column {name}: expected an integer, got {fields[c]!r}"
                ) from None
        cls, start, end = values
        if not 1 <= cls <= NUM_CLASSES:
            raise DatasetFormatError(f"{path}: line {lineno}: class {cls} outside 1-{NUM_CLASSES}")
        if start < 0 or end < start:
            raise DatasetFormatError(
                f"{path}: line {lineno}: expected 0 <= startTime_usec <= endTime_usec, got start={start}, end={end}"
            )
        windows.append(LabelWindow(label=cls - 1, start_us=start, end_us=end, line=lineno))
    if not windows:
        raise DatasetFormatError(f"{path}: no label rows after the header; expected at least one sample")
    return windows


def read_trial_list(path: str | Path) -> list[str]:
    """Trial file names (``<trial>.aedat``) listed in a ``trials_to_*.txt``; blank lines skipped.

    raises DatasetFormatError (missing file, a line not ending in ``.aedat``, empty list).
    """
    path = Path(path)
    names: list[str] = []
    for lineno, line in enumerate(_read_text(path, "trial list").splitlines(), start=1):
        name = line.strip()
        if not name:
            continue
        if not name.endswith(".aedat") or "/" in name or "\\" in name:
            raise DatasetFormatError(f"{path}: line {lineno}: expected a file name '<trial>.aedat', got {name!r}")
        names.append(name)
    if not names:
        raise DatasetFormatError(f"{path}: lists no trials; expected one '<trial>.aedat' per line")
    return names


def resolve_root(data_root: str | Path) -> Path:
    """The ``DvsGesture`` folder: ``data_root`` itself or ``data_root/DvsGesture``.

    raises DatasetFormatError when neither holds ``trials_to_train.txt`` and ``trials_to_test.txt``.
    """
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise DatasetFormatError(
            f"{root}: DVS128 Gesture data root does not exist; pass --data-root PATH "
            f"(the {FOLDER} folder or its parent). " + where_data_comes_from("dvs_gesture")
        )
    for cand in (root, root / FOLDER):
        if all((cand / f).is_file() for f in TRIAL_LISTS.values()):
            return cand.resolve()
    raise DatasetFormatError(
        f"{root}: not a DVS128 Gesture folder: expected {' and '.join(TRIAL_LISTS.values())} in it "
        f"or in {root / FOLDER}; pass --data-root PATH. " + where_data_comes_from("dvs_gesture")
    )


def trial_files(root: Path, split: str) -> list[tuple[Path, Path]]:
    """``(aedat, labels_csv)`` of every trial of ``split`` ('train' | 'test').

    raises DatasetFormatError naming a listed trial whose file is missing.
    """
    list_file = root / TRIAL_LISTS[split]
    out = []
    for name in read_trial_list(list_file):
        aedat = root / name
        csv = root / (name[: -len(".aedat")] + "_labels.csv")
        for f in (aedat, csv):
            if not f.is_file():
                raise DatasetFormatError(f"{f}: not found; trial {name!r} is listed in {list_file}")
        out.append((aedat, csv))
    return out


def source_files(root: Path) -> list[Path]:
    """Every file whose content checksum keys the frame cache (lists, .aedat and .csv of each trial)."""
    files = [root / f for f in TRIAL_LISTS.values()]
    for split in TRIAL_LISTS:
        for aedat, csv in trial_files(root, split):
            files += [aedat, csv]
    return files


def window_events(ev: Events, w: LabelWindow, is_sorted: bool) -> Events:
    """The events of ``ev`` with ``w.start_us <= t < w.end_us``, in file order (spikingjelly's mask)."""
    if is_sorted:
        j0, j1 = np.searchsorted(ev.t, [w.start_us, w.end_us], side="left")
        return ev.select(slice(int(j0), int(j1)))
    return ev.select((ev.t >= w.start_us) & (ev.t < w.end_us))


def read_split(
    root: Path, split: str, *, frames: int, split_by: str, downsample: int, progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Frames and labels of one split, trials in list order, windows in CSV order.

    Returns ``frames`` ``[N, T, 2, 128/downsample, 128/downsample]`` counts (uint8,
    int16 or int32) and ``labels`` ``[N]`` int64 in 0-10.
    raises DatasetFormatError (including a label window that holds no events).
    """
    out, labels = [], []
    for aedat, csv in tqdm(trial_files(root, split), desc=f"dvs_gesture {split}", unit="trial", disable=not progress):
        windows = read_labels_csv(csv)
        ev = read_aedat31(aedat, sensor=(HEIGHT, WIDTH))
        is_sorted = len(ev) < 2 or not bool(np.any(ev.t[1:] < ev.t[:-1]))
        for w in windows:
            s = window_events(ev, w, is_sorted)
            if len(s) == 0:
                raise DatasetFormatError(
                    f"{csv}: line {w.line}: window [{w.start_us}, {w.end_us}) us holds no events of {aedat.name}; "
                    "expected a non-empty sample"
                )
            counts = integrate_frames(s.x, s.y, s.p, s.t, frames=frames, split_by=split_by, height=HEIGHT, width=WIDTH)
            out.append(to_storage(downsample_frames(counts, downsample)))
            labels.append(w.label)
    shape = (frames, 2, HEIGHT // downsample, WIDTH // downsample)
    return stack_counts(out, shape), np.asarray(labels, dtype=np.int64)


@register_dataset("dvs_gesture")
class DVSGestureSpec(EventReaderSpec):
    """DVS128 Gesture: event counts ``[T, 2, 128/downsample, 128/downsample]``, 11 classes.

    No horizontal flip by default: left- and right-hand gestures are different classes.
    """

    sensor_size = (HEIGHT, WIDTH)
    num_classes = NUM_CLASSES

    reader = sys.modules[__name__]  # resolve_root, source_files and read_split below

    def layout(self, root):
        return "aedat3.1"

    def class_names(self, root, cfg, extra):
        return list(CLASS_NAMES)
