"""The one error type that every data reader raises."""

from __future__ import annotations


class DatasetFormatError(ValueError):
    """A data file or data root is missing or malformed.

    The message names the file, the byte offset or line where reading failed, and
    what was expected there, e.g.
    ``/data/DvsGesture/user01_fluorescent.aedat: byte 4120: truncated packet payload ...``.
    """


# where each data set's files come from, named by the errors for a missing or wrong data root
ORIGINS = {
    "nmnist": "N-MNIST (Orchard et al. 2015) is downloaded from https://www.garrickorchard.com/datasets/n-mnist: "
              "unzip Train.zip and Test.zip into one folder, giving Train/<digit>/*.bin and Test/<digit>/*.bin",
    "dvs_gesture": "DVS128 Gesture (Amir et al. 2017) is IBM's download, DvsGesture.tar.gz "
                   "(https://research.ibm.com/interactive/dvsgesture/): unpack it and pass its DvsGesture folder "
                   "(user*.aedat, *_labels.csv, trials_to_train.txt, trials_to_test.txt)",
    "cifar10": "CIFAR-10 is the python version from https://www.cs.toronto.edu/~kriz/cifar.html, "
               "cifar-10-python.tar.gz unpacked to cifar-10-batches-py/, or JPEG/PNG files as train/<class>/ and "
               "test/<class>/",
    "cifar100": "CIFAR-100 is the python version from https://www.cs.toronto.edu/~kriz/cifar.html, "
                "cifar-100-python.tar.gz unpacked to cifar-100-python/, or image files as train/<class>/ and "
                "test/<class>/",
    "tiny_imagenet": "Tiny-ImageNet is http://cs231n.stanford.edu/tiny-imagenet-200.zip, unzipped to tiny-imagenet-200/",
    "image_folder": "An image-folder data set is your own images, ROOT/train/<class>/<image> and "
                    "ROOT/test/<class>/<image>",
}
# this project's small samples of real data, in ../shared/data next to the repository (absent elsewhere)
SAMPLES = {"nmnist": "nmnist_subset", "dvs_gesture": "dvs_gesture_mini/DvsGesture", "cifar10": "cifar10_jpeg",
           "image_folder": "cifar10_jpeg"}


def shared_data_dirs() -> list:
    """The ``shared/data`` folders where this project keeps its samples: ``../shared/data`` from
    the working directory and from the repository root (the first that exists first)."""
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    cands = [Path("..") / "shared" / "data", repo.parent / "shared" / "data"]
    return [c for c in cands if c.is_dir()]


def where_data_comes_from(dataset: str) -> str:
    """A sentence for a data-root error: where ``dataset``'s files come from and, when this
    checkout has one, the path of this project's sample of it ('' for an unknown data set)."""
    text = ORIGINS.get(dataset, "")
    sample = SAMPLES.get(dataset)
    for d in shared_data_dirs() if sample else []:
        if (d / sample).is_dir():
            text += (f"; this project's sample is {d / sample}, e.g. --data-root {d / sample}" if text else
                     f"this project's sample is {d / sample}")
            break
    return text
