"""Exporting a saved model for fast inference: ONNX file, metadata, parity check, int8 quantization.

- :mod:`.onnx_export`: the network (+ softmax) to ``model.onnx`` with a dynamic batch dimension;
- :mod:`image_classifier.inference.onnx_metadata` (beside the backend that checks it when the file is
  loaded): class names and preprocessing inside the ONNX file;
- :mod:`.verify`: ONNX Runtime against PyTorch on the same images (max abs difference);
- :mod:`.quantize`: static int8 quantization calibrated on training images, with its accuracy change;
- :mod:`.pipeline`: ``export_model``, what ``image-classifier export`` runs.

Import the sub-modules directly; this package's top level stays free of torch/onnx imports.
"""
