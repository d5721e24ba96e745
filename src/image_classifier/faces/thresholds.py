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
#: A face model's deciding face closer than this to its training faces answers alone; a face
#: further away (up to the model's ``max_distance``) answers together with the whole-photo fallback
#: (see :func:`image_classifier.models.face_embedding.with_fallback`). On the athletes' training and
#: validation photos (split seeds 0-4, compare's 5 x 2 folds), the face model's out-of-fold accuracy
#: rose from 0.953 to 0.956 on average (on 4 seeds, the same on the fifth); a first pass over the same
#: folds gained about as much with 0.4 or 0.5.
FACE_ALONE_DISTANCE = 0.45
