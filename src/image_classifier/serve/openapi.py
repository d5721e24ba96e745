"""The OpenAPI 3.1 description of the server's API, built for the models actually loaded.

Kept next to the routes it describes; the tests check it against the app's URL map and validate
real responses (every success and error case) against the schemas here.
"""
from __future__ import annotations

from typing import Any

from image_classifier.optionspec import DEFAULT_KEEP
from image_classifier.version import __version__
from image_classifier.runs import METRICS_NAME
from image_classifier.serve.contract import ERROR_KINDS, max_request_body_bytes

def _ok(description: str, schema: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}}


def _error(description: str) -> dict[str, Any]:
    return _ok(description, "Error")


# Every operation also answers errors not listed for it (404, 405, 500, ...) in the same shape.
DEFAULT_ERROR = _error("Any other error (unknown URL or method, internal error): JSON with `error` and `kind`, "
                       "like every error.")


def openapi_document(store: Any, *, max_upload_bytes: int) -> dict[str, Any]:
    names = list(store.names)
    limit_mb = f"{max_upload_bytes / 1024 / 1024:g} MB"
    bound_mb = f"{max_request_body_bytes(max_upload_bytes) / 1024 / 1024:g} MB"
    model_param = {
        "type": "string",
        "enum": names,
        "description": f"Which model answers; default: {store.default!r}.",
    }
    top_k_param = {
        "type": "integer",
        "minimum": 1,
        "default": 5,
        "description": "How many classes to list in `top` (larger values are capped at the number of classes).",
    }
    explain_param = {
        "type": "string",
        "enum": ["1", "0", "true", "false", "yes", "no", "on", "off", ""],
        "default": "0",
        "description": "1: also say why (the `explanation` object: a Grad-CAM heat map over the photo, or "
                       "the box of the face that decided); computed only when asked.",
    }
    keep_param = {
        "type": "number",
        "exclusiveMinimum": 0,
        "exclusiveMaximum": 1,
        "description": "Where the \"none of these\" threshold sits, as the share of the model's known validation "
                       f"photos it keeps (default: the model's own, {DEFAULT_KEEP} unless trained with another). Lower answers "
                       "`unknown` more often: fewer strangers accepted, fewer known photos named. The answer's "
                       "`threshold` says what it trades, measured on validation. A model without a rule: 422.",
    }
    params = {"model": model_param, "top_k": top_k_param, "explain": explain_param, "keep": keep_param}
    not_ready = _error("The models are still loading (or failed to load); retry after `Retry-After` seconds.")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "image-classifier",
            "version": __version__,
            "description": (
                "Classify a photo with the models trained by `image-classifier`. Every answer other "
                "than a 2xx, on any URL, is JSON `{\"error\": \"...\", \"kind\": \"...\"}`: a message "
                "for people and a machine-readable `kind` (see the `Error` schema). Uploads are decoded "
                f"in memory; an upload is limited to {limit_mb}. Larger bodies, up to {bound_mb}, are read "
                "and discarded, and answered with the JSON 413; bodies of "
                f"{bound_mb} or more are refused by the HTTP server itself before they are read, with "
                "a plain-text 413."
            ),
        },
        "paths": {
            "/api/predict": {
                "post": {
                    "summary": "Classify one image",
                    "operationId": "predict",
                    "parameters": [{"name": name, "in": "query", "required": False, "schema": schema}
                                   for name, schema in params.items()],
                    "requestBody": {
                        "required": True,
                        "description": (
                            "The image (JPEG, PNG, GIF, BMP, WebP, TIFF, PPM; the format is read from the "
                            "content, not the name or content type), either as the multipart field `file` "
                            "(form fields `model`, `top_k`, `explain` and `keep` override the query parameters) or as the raw body."
                        ),
                        "content": {
                            "multipart/form-data": {
                                "schema": {
                                    "type": "object",
                                    "required": ["file"],
                                    "properties": {
                                        "file": {"type": "string", "contentMediaType": "application/octet-stream"},
                                        **params,
                                    },
                                }
                            },
                            "image/*": {"schema": {"type": "string", "contentMediaType": "image/*"}},
                            "application/octet-stream": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "200": _ok("The prediction", "Prediction"),
                        "400": _error("No file, an empty file, or an image that cannot be decoded (truncated or corrupt)."),
                        "413": _error(
                            f"The upload is over {limit_mb}, or the image declares more pixels than the "
                            f"decompression-bomb limit ({store.max_pixels} pixels)."),
                        "415": _error("The file is not an image in a supported format or colour mode "
                                      "(text, PDF, HEIC, SVG, ...)."),
                        "422": _error("A bad parameter: unknown `model`, `top_k` not a whole number >= 1, `explain` "
                                      "not 1 or 0, or `keep` not a fraction between 0 and 1 (or given for a model "
                                      "without a \"none of these\" rule)."),
                        "503": not_ready,
                        "default": DEFAULT_ERROR,
                    },
                }
            },
            "/api/models": {
                "get": {
                    "summary": "The loaded models, their classes and test metrics",
                    "operationId": "models",
                    "responses": {"200": _ok("The models", "Models"), "503": not_ready,
                                  "default": DEFAULT_ERROR},
                }
            },
            "/api/health": {
                "get": {
                    "summary": "Readiness: 200 once every model is loaded",
                    "operationId": "health",
                    "responses": {
                        "200": _ok("Ready", "Health"),
                        "503": _ok("Loading, loading failed, or stopping (with `error` and `kind`)", "Health"),
                        "default": DEFAULT_ERROR,
                    },
                }
            },
            "/api/openapi.json": {
                "get": {
                    "summary": "This document",
                    "operationId": "openapi",
                    "responses": {"200": {"description": "OpenAPI 3.1 document",
                                          "content": {"application/json": {"schema": {"type": "object"}}}},
                                  "default": DEFAULT_ERROR},
                }
            },
        },
        "components": {"schemas": _schemas()},
    }


def _schemas() -> dict[str, Any]:
    number_or_null = {"type": ["number", "null"]}
    # A class and its probability: an entry of `top`, `closest`, a face's `closest`.
    label_probability = {"label": {"type": "string"}, "probability": {"type": "number", "minimum": 0, "maximum": 1}}
    return {
        "Error": {
            "type": "object",
            "required": ["error", "kind"],
            "properties": {
                "error": {"type": "string", "description": "What went wrong and what to do, for people."},
                "kind": {"type": "string", "enum": list(ERROR_KINDS),
                         "description": "What went wrong, for programs: "
                                        + "; ".join(f"`{k}`: {v}" for k, v in ERROR_KINDS.items())},
            },
            "additionalProperties": False,
        },
        "Prediction": {
            "type": "object",
            "required": ["model", "label", "probabilities", "top", "latency_ms", "timing", "unknown", "closest",
                         "rejection", "threshold"],
            "additionalProperties": False,
            "properties": {
                "model": {"type": "string"},
                "label": {"type": "string"},
                "probabilities": {
                    "type": "object",
                    "description": "Probability of every class (they sum to 1).",
                    "additionalProperties": {"type": "number", "minimum": 0, "maximum": 1},
                },
                "top": {
                    "type": "array",
                    "description": "The `top_k` most probable classes, most probable first.",
                    "items": {
                        "type": "object",
                        "required": ["label", "probability"],
                        "additionalProperties": False,
                        "properties": label_probability,
                    },
                },
                "latency_ms": {"type": "number", "minimum": 0,
                               "description": "Time in the server: decode, preprocess, queue, forward."},
                "timing": {
                    "type": "object",
                    "required": ["decode_ms", "queue_ms", "inference_ms", "batch_size"],
                    "additionalProperties": False,
                    "properties": {
                        "decode_ms": {"type": "number", "minimum": 0,
                                      "description": "Decode, resize, normalise (a face model: find the faces and "
                                                     "compute the descriptor)."},
                        "queue_ms": {"type": "number", "minimum": 0,
                                     "description": "Waiting while other requests' forward passes use the cores."},
                        "inference_ms": {"type": "number", "minimum": 0,
                                         "description": "The forward pass (of the batch this image was in)."},
                        "batch_size": {"type": "integer", "minimum": 0,
                                       "description": "Requests that arrived together and shared the forward pass "
                                                      "(0: a face answered, no forward pass ran)."},
                        "explain_ms": {"type": "number", "minimum": 0,
                                       "description": "With `explain=1` only: computing the explanation."},
                    },
                },
                "face": {"type": ["array", "null"], "items": {"type": "number"}, "minItems": 4, "maxItems": 4,
                         "description": "Face models only: [x0, y0, x1, y1] of the face whose descriptor decided, "
                                        "in the pixels of the (EXIF-oriented) photo; null when the whole-photo "
                                        "fallback decided (no face found, or none like a known person's)."},
                "face_method": {"type": ["string", "null"],
                                "description": "Face models only: the detector step that found the face."},
                "faces_found": {"type": "integer", "minimum": 0, "description": "Face models only."},
                "face_distance": {"type": ["number", "null"], "minimum": 0,
                                  "description": "Face models only: the deciding face's distance to the nearest "
                                                 "training face (when none decides, the closest face's; null: no "
                                                 "face); above the model's max_distance no face decides."},
                "picture_distance": {"type": "number", "minimum": 0,
                                     "description": "Face models only, for a photo in which no face is found: "
                                                    "the picture's distance to the nearest training picture "
                                                    "(the fallback's pooled features), what the rejection rule "
                                                    "scores for it; absent for a photo with a face."},
                "image_size": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2,
                               "description": "Face models only: [width, height] of the photo, for drawing the box."},
                "face_index": {"type": ["integer", "null"], "minimum": 0,
                               "description": "Face models only: which of `faces` decided (null: none did)."},
                "faces": {"type": "array", "items": {"$ref": "#/components/schemas/Face"},
                          "description": "Face models only: every face found, largest first, each with its own "
                                         "answer (a group photo names everyone in it)."},
                "threshold": {"$ref": "#/components/schemas/Threshold"},
                # An ensemble (models/ensemble): what each member said, and its "none of these" score.
                "members": {"type": "array",
                            "description": "Ensembles only: each member's name, weight and details (a face "
                                           "model's face fields; `p_value`: the member's own rejection p-value).",
                            "items": {"type": "object", "required": ["name", "weight"],
                                      "properties": {"name": {"type": "string"}, "weight": {"type": "number"},
                                                     "p_value": {"type": "number", "minimum": 0, "maximum": 1}}}},
                "member_p_value": {"type": ["number", "null"], "minimum": 0, "maximum": 1,
                                   "description": "Ensembles only: the smallest of its members' p-values (how "
                                                  "strange the strangest member finds the photo), what the "
                                                  "ensemble's rejection rule thresholds; null: no member has a rule."},
                # "None of these" (open-set rejection).
                "unknown": {"type": "boolean",
                            "description": "True when the model's rejection rule (fitted on its validation split) "
                                           "finds the photo like none of its classes; `label` is then \"unknown\" "
                                           "and `closest` names the most probable class. Always false for a model "
                                           "without a rule or a server started with --no-reject."},
                "closest": {"type": "object", "required": ["label", "probability"], "additionalProperties": False,
                            "description": "The most probable class, also when the answer is unknown.",
                            "properties": label_probability},
                "rejection": {
                    "type": ["object", "null"],
                    "description": "The rejection rule's verdict: `score` against `threshold` (accepted when "
                                   "score >= threshold; `kind` max_probability: the largest probability; "
                                   "face_distance: a p-value of the face's distance to the nearest training face; "
                                   "picture_distance: a p-value of a photo without a face's distance to the "
                                   "nearest training picture; "
                                   "member_p_value (an ensemble): the smallest of its members' own p-values; "
                                   "`value`: the raw probability or distance). Null: no rule, or --no-reject.",
                    "required": ["score", "threshold", "kind"],
                    "additionalProperties": False,
                    "properties": {"score": {"type": "number"}, "threshold": {"type": "number"},
                                   "kind": {"type": "string"}, "value": {"type": "number"}},
                },
                # Issue 14, "why": only with explain=1.
                "explanation": {"$ref": "#/components/schemas/Explanation"},
            },
        },
        "Face": {
            "type": "object",
            "required": ["box", "method", "decided", "distance", "label", "unknown", "closest", "probability",
                         "rejection"],
            "additionalProperties": False,
            "description": "One face found in the photo and its own answer.",
            "properties": {
                "box": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4,
                        "description": "[x0, y0, x1, y1] in the pixels of the (EXIF-oriented) photo."},
                "method": {"type": "string", "description": "The detector step that found it."},
                "decided": {"type": "boolean", "description": "This face answered for the whole photo."},
                "distance": {**number_or_null, "minimum": 0,
                             "description": "Its descriptor's distance to the nearest training face (null: the "
                                            "face got no descriptor)."},
                "label": {"type": ["string", "null"],
                          "description": "Who it is: a class, or \"unknown\" when the \"none of these\" rule "
                                         "rejects its distance (as for a photo scored by it)."},
                "unknown": {"type": ["boolean", "null"]},
                "closest": {"type": ["object", "null"], "required": ["label", "probability"],
                            "additionalProperties": False,
                            "properties": label_probability,
                            "description": "The face head's most probable class for this face alone (null: no "
                                           "descriptor); for the face that decided, the photo's answer (a face "
                                           "not very like a training face answers with the rest of the photo)."},
                "probability": {**number_or_null, "minimum": 0, "maximum": 1},
                "rejection": {"type": ["object", "null"],
                              "description": "The rule's verdict on this face's distance (as `rejection`)."},
            },
        },
        "Threshold": {
            "type": ["object", "null"],
            "required": ["keep", "kept", "strangers_accepted"],
            "additionalProperties": False,
            "description": "The \"none of these\" threshold in force (`keep`) and what it trades, measured on the "
                           "photos the rule was fitted on (`fitted_on`). Null: the model has no rule, or the server "
                           "runs with --no-reject.",
            "properties": {
                "keep": {"type": "number", "description": "The share of known photos it is set to keep."},
                "kept": {"type": "number", "description": "The share of the known photos it was fitted on that it keeps."},
                "fitted_on": {"type": "string", "description": "Which known photos: `validation`, or a face model's "
                                                               "`training and validation` (each photo measured "
                                                               "against the model without it)."},
                "strangers_accepted": {**number_or_null,
                                       "description": "Face models: the share of known faces seen as strangers "
                                                      "(each against the other people's faces in the model) it accepts; "
                                                      "null: not measured for this model."},
                "strangers": {"type": "integer", "minimum": 0},
                "strangers_method": {"type": ["string", "null"]},
                "threshold": {"type": "number"},
                "scale": {"type": "string"},
            },
        },
        "Explanation": {
            "type": "object",
            "description": "Why the model answered `target` (with `explain=1` only). `grad-cam`: the Grad-CAM "
                           "heat map of the network's last convolutional stage (`layer`) in a jet colour map, "
                           "half over the photo. `face`: a face model's answer came from the face in `box` "
                           "(photo pixels of `image_size`); the picture shows it boxed, the rest dimmed. "
                           "The PNG has the photo's proportions, at most 512 pixels on its longer side.",
            "required": ["method", "png_base64", "target"],
            "additionalProperties": False,
            "properties": {
                "method": {"type": "string", "enum": ["grad-cam", "face"]},
                "png_base64": {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/png"},
                "target": {"type": "string", "description": "The class explained: the model's answer."},
                "layer": {"type": "string", "description": "grad-cam: the module of the stage explained."},
                "box": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4,
                        "description": "face: [x0, y0, x1, y1] of the deciding face."},
                "image_size": {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2},
                "text": {"type": "string", "description": "face: \"decided by the face in this box\"."},
            },
        },
        "Model": {
            "type": "object",
            "required": ["name", "architecture", "backend", "classes", "default", "input_size", "test",
                         "validation_accuracy", "offline_latency_ms", "latency_ms_median", "requests", "strangers"],
            "additionalProperties": False,
            "properties": {
                "name": {"type": "string"},
                "architecture": {"type": "string"},
                "backend": {"type": "string", "description": "What runs the forward pass (torch, onnx, ...)."},
                "backend_reason": {"type": ["string", "null"],
                                   "description": "Why this backend runs: requested, or what --backend auto measured."},
                "classes": {"type": "array", "items": {"type": "string"}},
                "default": {"type": "boolean"},
                "input_size": {"type": ["integer", "null"]},
                "test": {
                    "description": f"Held-out test metrics from the run's {METRICS_NAME}; null when not evaluated.",
                    "type": ["object", "null"],
                    "required": ["accuracy"],
                    "properties": {
                        "accuracy": {"type": "number", "minimum": 0, "maximum": 1},
                        "accuracy_ci95": {"type": "array", "items": {"type": "number"}},
                        "macro_f1": {"type": "number"},
                        "n": {"type": "integer"},
                    },
                },
                "validation_accuracy": {**number_or_null,
                                        "description": f"Best validation accuracy, from the run's {METRICS_NAME}."},
                "offline_latency_ms": {**number_or_null,
                                       "description": "File-to-label latency at batch 1 measured by compare."},
                "latency_ms_median": {**number_or_null,
                                      "description": "Median server time of this model's recent requests."},
                "requests": {"type": "integer", "minimum": 0},
                "strangers": {
                    "type": ["object", "null"],
                    "description": "For a folder of people: the share of strangers this model accepted as one of "
                                   f"the known people when compare chose the served model (from {METRICS_NAME}); "
                                   "above `limit`, it will call a stranger one of the known people.",
                    "required": ["accepted", "limit", "source"],
                    "additionalProperties": False,
                    "properties": {"accepted": {"type": "number", "minimum": 0, "maximum": 1},
                                   "limit": number_or_null, "source": {"type": "string"}},
                },
            },
        },
        "Models": {
            "type": "object",
            "required": ["default", "models", "limits"],
            "additionalProperties": False,
            "properties": {
                "default": {"type": "string"},
                "models": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}},
                "limits": {
                    "type": "object",
                    "required": ["max_upload_bytes", "max_pixels"],
                    "properties": {"max_upload_bytes": {"type": "integer"}, "max_pixels": {"type": "integer"}},
                },
            },
        },
        "Health": {
            "type": "object",
            "required": ["status"],
            "properties": {
                "status": {"type": "string", "enum": ["ready", "loading", "failed", "stopping"]},
                "models": {"type": "array", "items": {"type": "string"}},
                "default": {"type": "string"},
                "error": {"type": "string"},
                "kind": {"type": "string", "enum": ["not_ready", "load_failed", "stopping"],
                         "description": "When not ready: why, as in the `Error` schema."},
            },
        },
    }
