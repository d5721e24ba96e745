"""The study's workflows, from folder to report, and what they return.

- :mod:`~image_classifier.study.comparison`: ``compare`` (audit, split, train, select on
  validation, score on test, time, report); :mod:`~image_classifier.study.resume` decides what a
  re-run reuses, :mod:`~image_classifier.study.backends` times PyTorch against ONNX Runtime;
- :mod:`~image_classifier.study.evaluate`: ``evaluate``, one saved model on any labelled folder;
- :mod:`~image_classifier.study.environment`: the machine and versions a report names;
- :mod:`~image_classifier.study.options`: the checked options of a run, and
  :mod:`~image_classifier.study.defaults` the study's defaults;
- :mod:`~image_classifier.study.run`: :func:`compare`, the Python entry point.

Both workflows return a :class:`~image_classifier.results.Study` (re-exported here with
:class:`~image_classifier.results.ModelResult`); ``Study.load(run_dir)`` reads a finished run.
Importing this package is instant: the workflows load torch when first called.
"""
from image_classifier.results import ModelResult, Study
from image_classifier.study.run import compare

__all__ = ["ModelResult", "Study", "compare"]
