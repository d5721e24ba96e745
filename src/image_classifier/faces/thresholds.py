"""The face distances that decide "the same person" and how faces are grouped into people, and the
smallest group: numbers only (standard library), so that option declarations (``group --help``)
read them without loading dlib or numpy. :mod:`image_classifier.faces.clustering` explains them."""

#: Faces closer than this are joined in the core graph (see :mod:`image_classifier.faces.clustering`).
CORE_DISTANCE = 0.5
#: dlib's same-person distance: two faces closer than this are one person (99.38 % of LFW pairs right).
SAME_PERSON_DISTANCE = 0.6
#: A leftover face joins the nearest group whose centre is within this distance.
ATTACH_DISTANCE = SAME_PERSON_DISTANCE
#: Groups smaller than this are dissolved into singles (``group --min-size``).
MIN_GROUP_SIZE = 3
