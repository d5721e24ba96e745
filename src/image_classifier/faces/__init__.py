"""Faces in photos of people: detection, 5-point landmarks, aligned chips and dlib's 128-D descriptor.

A data-layer service (below ``models`` and ``train``): :func:`analyse_image` looks at one image,
:class:`FaceCache` remembers each file's answer by its SHA-256, :func:`survey_faces` counts faces
per class for ``check`` and ``compare``. dlib and the ``face_recognition_models`` weights are
imported only when a face is first looked for, and the names below only when first used (PEP 562):
``image_classifier.faces.thresholds`` is read by option declarations (``group --help``) without
loading numpy, PIL or dlib.
"""
from __future__ import annotations

from image_classifier.lazy import lazy_names

#: Each public name -> the module that defines it.
_WHERE = {
    "METHODS": "detect", "Face": "detect", "FaceAnalysis": "detect", "analyse_image": "detect", "describe": "detect",
    "face_chip": "detect", "describe_rest": "detect", "FaceModelsNotFoundError": "dlib_weights", "weights_sha256": "dlib_weights",
    "FaceCache": "store", "FaceStream": "store", "analyse_bytes": "store", "describe_every_face": "store",
    "FaceSurvey": "survey", "survey_faces": "survey",
}
__all__ = sorted(_WHERE)

__getattr__ = lazy_names(__name__, _WHERE, globals())
