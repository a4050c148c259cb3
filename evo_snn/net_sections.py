"""The sections of the run configuration that say what the nets see, what they are and how
they train: ``data`` (frames, images, the train/validation split, augmentation),
``model`` (the spiking net of the registry), ``teacher`` (the dense teacher's training)
and ``train`` (every training loop: AMP, memory layout, CPU threads, validation batches).

Frozen dataclasses, each key declared with ``key(...)`` (``evo_snn.schema``); building one
checks nothing, ``Config.validate`` (``evo_snn.config``) or ``DataConfig.check`` does.
``evo_snn.config`` re-exports every name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Annotated, Literal, Optional, Union

from evo_snn.atomic import to_jsonable
from evo_snn.choices import AMP_MODES, NEURON_BACKENDS, RESIZE_FILTERS, SPLIT_MODES, SYNTHETIC_MAX_CLASSES
from evo_snn.schema import SCHEMA, SEED_BOUND, PosInt, Str, key, validated


@dataclass(frozen=True)
class DataConfig:
    """How events become frames, how images are read, and how the training set is split.

    Static images (cifar10, cifar100, tiny_imagenet): frames = T repeats of the image (direct
    encoding); split_by is ignored and downsample must be 1.

    Training-batch augmentation (``data.aug_*``) acts in ``FrameSet.to_seq(train=True)``
    (evo_snn.data.augment).
    """

    __pydantic_config__ = SCHEMA

    frames: Annotated[int, key("T, number of frames per sample.", ge=1)] = 8
    split_by: Annotated[Literal[SPLIT_MODES], key(
        "'number' (equal event count per frame) or 'time' (equal duration).", strict=False)] = "number"
    downsample: Annotated[int, key("spatial sum-pooling factor (1 = sensor resolution).", ge=1)] = 1
    val_fraction: Annotated[float, key(
        "fraction of the training set held out, stratified, for fitness.", gt=0, lt=1)] = 0.1
    split_seed: Annotated[Optional[int], key(
        "seed of that train/validation split (and of the synthetic data); null (default) = search.seed. Fix it "
        "to run several search seeds on one split, e.g. with one shared ``--teacher`` (whose split.json must "
        "match); ``Config.split_seed()``.", null="= search.seed", ge=0, lt=SEED_BOUND)] = None
    cache_dir: Annotated[Optional[str], key(
        "where converted frames are cached; null = $XDG_CACHE_HOME/evo_snn.")] = None
    synthetic_classes: Annotated[int, key(
        "classes (directions of motion) of the embedded synthetic data set (ignored for real data).",
        ge=2, le=SYNTHETIC_MAX_CLASSES)] = 4
    synthetic_train_per_class: Annotated[int, key(
        "training samples per class of the synthetic data set (ignored for real data).", ge=1)] = 48
    synthetic_test_per_class: Annotated[int, key(
        "test samples per class of the synthetic data set (ignored for real data).", ge=1)] = 16
    synthetic_size: Annotated[int, key(
        "sensor size (pixels per side) of the synthetic data set (ignored for real data).", ge=4)] = 16
    aug_translate_px: Annotated[Optional[int], key(
        "random shift of up to this many pixels per axis with zero fill, the same as a random crop after that "
        "much zero padding; null = the data set's default: 4 for CIFAR, 8 for Tiny-ImageNet, 0 (off) for "
        "event data.", ge=0)] = None
    aug_hflip: Annotated[Optional[bool], key(
        "random horizontal flip (p = 0.5); null = on for static images, off for event data (DVS128 Gesture: "
        "left- and right-hand gestures are different classes).")] = None
    aug_event_drop: Annotated[float, key(
        "probability of dropping each event (binomial thinning of the counts); event data only; 0 = off.",
        ge=0, lt=1)] = 0.0
    image_size: Annotated[Union[PosInt, tuple[PosInt, PosInt], None], key(
        "image-folder layouts only: null = every image must have the same size; S or [H, W] = resize every "
        "image to S x S or H x W pixels (aspect ratio not kept) with data.resize_filter.",
        strict=False, allowed="null, an integer >= 1 or [H, W] (integers >= 1)")] = None
    resize_filter: Annotated[Literal[RESIZE_FILTERS], key(
        "the resampling filter of data.image_size (Pillow's filters, antialiased when shrinking).",
        strict=False)] = "bilinear"
    classes: Annotated[tuple[Str, ...], key(
        "the class names in label order; empty = as the data set names them. The search records them in "
        "config.json, and a non-empty value must match the data.", strict=False, allowed="a list of strings")] = ()

    def check(self) -> None:
        """The schema's checks of the ``data.*`` values (the data set's own checks are
        ``DatasetSpec.check_config``). raises ConfigError naming the key and the value."""
        validated(DataConfig, to_jsonable(dataclasses.asdict(self)), "data.")


@dataclass(frozen=True)
class ModelConfig:
    """Spiking net built from the model registry (``evo_snn.models``); teacher and students share it.

    model.name, model.neuron and model.surrogate are checked against their tables when the net
    is built (``evo_snn.models``), as is tau > 1 for LIF / PLIF neurons.
    """

    __pydantic_config__ = SCHEMA

    name: Annotated[str, key("registry name (``evo_snn.models.model_names()``).")] = "tiny_conv"
    channels: Annotated[tuple[PosInt, ...], key(
        "conv channels per block (conv_snn / tiny_conv; dvs_gesture_net: one entry for all 5 blocks, or five); "
        "ignored by the ResNet/WRN/VGG models.", strict=False, allowed="a list of integers >= 1")] = (8, 16)
    hidden: Annotated[int, key("width of the hidden FC layer (0 = none; dvs_gesture_net: 0 = 512).", ge=0)] = 0
    neuron: Annotated[str, key(
        "'if' | 'lif' | 'plif' | 'relu' ('relu' = the ANN twin: nn.ReLU in place of every spiking neuron, same "
        "layers and weights, used for ANN-teacher KD).")] = "if"
    surrogate: Annotated[str, key("surrogate gradient: 'atan' | 'sigmoid' | 'rect'.")] = "atan"
    tau: Annotated[float, key("membrane time constant for LIF/PLIF in time steps (> 1 for them).", gt=0)] = 2.0
    v_threshold: Annotated[float, key("firing threshold.", gt=0)] = 1.0
    v_reset: Annotated[Optional[float], key(
        "reset potential after a spike (null = soft reset, subtract the threshold).", null="soft reset")] = 0.0
    detach_reset: Annotated[bool, key(
        "detach the reset from the graph in the surrogate-gradient backward pass (spikingjelly's "
        "detach_reset).")] = True
    dropout: Annotated[float, key(
        "dropout before the readout FC (conv_snn, ResNet/WRN/VGG: 0 = none; dvs_gesture_net: 0 = its default "
        "0.5).", ge=0, lt=1)] = 0.0
    width: Annotated[float, key(
        "channel multiplier for resnet18*, wrn16_4*, vgg16* (every conv width is round(width * c), at least 1); "
        "1.0 = the published widths.", gt=0)] = 1.0
    neuron_backend: Annotated[Literal[NEURON_BACKENDS], key(
        "which spikingjelly implementation runs the spiking neurons (``evo_snn.models.neurons.select_backend``): "
        "'auto' (default: the fastest one that imports and runs on the device; always 'torch' on the CPU) | "
        "'torch' (the reference, on any device) | 'cuda' (spikingjelly 2.x's native CUDA kernels) | 'triton' | "
        "'cupy' (spikingjelly 0.0.0.x only); all but 'auto' and 'torch' need a CUDA device. The choice is "
        "recorded as ``backend`` in manifest.json and in each evaluation.", strict=False)] = "auto"

    def ann_twin(self) -> "ModelConfig":
        """The same model with nn.ReLU in place of every spiking neuron (ANN-teacher KD)."""
        return dataclasses.replace(self, neuron="relu")


@dataclass(frozen=True)
class TeacherConfig:
    """The dense teacher, trained once per run (Adam, cosine schedule)."""

    __pydantic_config__ = SCHEMA

    epochs: Annotated[int, key(
        "epochs of dense-teacher training, once per run.", ge=1,
        hint="an untrained teacher teaches nothing; reuse a trained one with --teacher PATH")] = 10
    batch_size: Annotated[int, key("batch size of dense-teacher training.", ge=1)] = 32
    lr: Annotated[float, key("Adam learning rate of dense-teacher training.", gt=0)] = 1e-3
    weight_decay: Annotated[float, key("Adam weight decay of dense-teacher training.", ge=0)] = 0.0


@dataclass(frozen=True)
class TrainConfig:
    """How every training loop runs (teacher training and each genome's KD training,
    ``evo_snn.training.train.train_steps``): the GPU hot path and the CPU threads. The defaults change nothing.
    """

    __pydantic_config__ = SCHEMA

    amp: Annotated[Literal[AMP_MODES], key(
        "automatic mixed precision of the training forwards (student and teacher): 'none' (default: float32) | "
        "'bf16' (``torch.autocast`` with bfloat16, any device) | 'fp16' (float16 with a ``GradScaler``; CUDA "
        "only). Weights, optimizer state and the loss (the KD softmax / KL and cross-entropy) stay float32; "
        "validation passes run in float32, so accuracies are measured as without AMP.", strict=False)] = "none"
    channels_last: Annotated[bool, key(
        "convert the nets (4-D conv weights) and each batch to the channels-last memory layout. spikingjelly's "
        "multi-step layers flatten ``[T, N, C, H, W]`` to ``[T*N, C, H, W]`` (a view), so a batch laid out as "
        "``[T, N, H, W, C]`` in memory reaches every conv and BatchNorm as channels-last; neurons are "
        "element-wise and keep it. Same values up to float rounding (a spike may flip where a membrane "
        "potential sits on the threshold).")] = False
    threads: Annotated[Optional[int], key(
        "torch CPU threads of the driver and of each worker (null, the default: fitted to the machine by "
        "``evo_snn.threads``: the usable CPUs divided by the workers, less the cores other processes keep busy, "
        "re-checked while training); an int >= 1 fixes it (``--threads N``). Float results may differ in the "
        "last bits between thread counts.", null="fit to the machine", ge=1)] = None
    eval_batch_size: Annotated[Optional[int], key(
        "batch size of the validation passes of the teacher and of every evaluation (with the energy counters "
        "on the same pass); null (default) = 64 on the CPU, where larger batches gained nothing here, and 512 on "
        "a GPU, where a validation pass is otherwise mostly kernel launches (issue 26). Logits, accuracies and "
        "energy counts do not depend on it (each sample's neurons start from rest; tested).",
        null="64 on the CPU, 512 on a GPU", ge=1)] = None
    compile: Annotated[bool, key(
        "train every genome's student (and run its sparse teacher) through ``torch.compile`` (issue 26; default "
        "false): one persistent module per worker, compiled once, each genome's weights and masks copied in "
        "place (``evo_snn.training.compiled``); on CUDA with CUDA graphs (mode 'reduce-overhead', untested until "
        "a GPU run). Values equal the eager ones up to float rounding, so a run does not reproduce one without "
        "it; grouped students (search.students_per_batch > 1) run eager.")] = False

