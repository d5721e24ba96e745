"""Evaluation: test-set metrics (``metrics``) and on-machine speed/size measurements (``speed``)."""
