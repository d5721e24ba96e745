"""What ``image-classifier export`` is asked to do, each option declared once (:mod:`image_classifier.optionspec`):
the parser, the Python keywords of :class:`ExportOptions` and their checks come from these fields. A
light module (standard library only): ``export --help`` reads it without loading torch or ONNX."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from image_classifier.errors import OptionError
from image_classifier.optionspec import above_zero, at_least_one, check_options, option
from image_classifier.runs import ONNX_INT8_NAME

FORMATS = ("onnx",)
QUANTIZATIONS = ("int8",)
EVAL_SUBSETS = ("val", "test")
DEFAULT_OPSET = 17  # supported by every ONNX Runtime since 1.11 and by most other runtimes
MIN_OPSET = 11
MAX_OPSET = 20  # the highest the TorchScript-based exporter of torch 2.14 writes
#: Largest accepted |ONNX - PyTorch| probability difference in fp32.
FP32_TOLERANCE = 1e-4


def check_opset(opset: int) -> int:
    """The one check of an ONNX opset: ``--opset``, ``opset=`` and
    :func:`~image_classifier.export.onnx_export.export_onnx` alike."""
    if not MIN_OPSET <= int(opset) <= MAX_OPSET:
        raise OptionError(f"--opset must be between {MIN_OPSET} and {MAX_OPSET}, not {opset}")
    return int(opset)


def _check_drop(images: int) -> int:
    if int(images) < 0:
        raise OptionError(f"--max-accuracy-drop is a number of images, 0 or more, not {images}")
    return int(images)


@dataclass(frozen=True, kw_only=True)
class ExportOptions:
    """How :func:`~image_classifier.export.pipeline.export_model` exports; each field is the ``export``
    option of the same name (``--no-measure`` is ``measure=False``), checked when made."""

    format: str = option("onnx", choices=FORMATS, help="export format (default: %(default)s)")
    opset: int = option(DEFAULT_OPSET, check=check_opset,
                        help=f"ONNX opset, {MIN_OPSET}-{MAX_OPSET} (default: %(default)s)")
    quantize: str | None = option(None, choices=QUANTIZATIONS,
                                  help=f"also write {ONNX_INT8_NAME} (ONNX Runtime static quantization); needs --data "
                                       "and --split (or --calibration-data and --eval-data), and shows its measured "
                                       "accuracy change")
    data: Path | None = option(None, metavar="DIR",
                               help="the data folder the model was trained on; with --split, int8 calibrates on its "
                                    "train subset and reduced precision is checked on its --eval-subset")
    split: Path | None = option(None, metavar="CSV",
                                help="the split manifest the model was trained with (from `image-classifier split`)")
    eval_subset: str = option("val", choices=EVAL_SUBSETS,
                              help="which subset of --split measures reduced-precision accuracy (default: %(default)s)")
    calibration_data: Path | None = option(None, metavar="DIR",
                                           help="training images to calibrate int8 ranges on (a folder, class "
                                                "sub-folders or not)")
    calibration_images: int = option(64, metavar="N", check=at_least_one("--calibration-images"),
                                      help="how many calibration images to use (default: %(default)s)")
    eval_data: Path | None = option(None, metavar="DIR",
                                    help="labelled images (one sub-folder per class, e.g. the validation split) to "
                                         "measure reduced-precision accuracy on; int8/bf16 are used by --backend auto "
                                         "only if they lose at most --max-accuracy-drop images there")
    verify_data: Path | None = option(None, metavar="DIR",
                                      help="real images for the parity check (default: the eval/calibration data, "
                                           "else synthetic)")
    verify_images: int = option(16, cli=False, check=at_least_one("verify_images"),
                                help="how many of them the parity check uses")
    max_accuracy_drop: int = option(1, metavar="N", check=_check_drop,
                                    help="images a reduced-precision backend may lose and still be accepted "
                                         "(default: %(default)s)")
    tolerance: float = option(FP32_TOLERANCE, check=above_zero("--tolerance"),
                              help="largest accepted |ONNX - PyTorch| probability difference (default: %(default)s)")
    measure: bool = option(True, help="do not time the backends now (--backend auto then measures on first use)")

    def __post_init__(self) -> None:
        check_options(self)
