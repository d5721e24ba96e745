"""Evaluation, a library: scoring a loaded model on labelled images (``evaluation``), test-set
metrics (``metrics``) and on-machine speed/size measurements (``speed``). The workflows that use
them (``compare``, ``evaluate``) are in :mod:`image_classifier.study`."""
