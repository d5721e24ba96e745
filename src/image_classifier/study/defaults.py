"""The study's defaults, in a module that imports nothing, so that the CLI's help can name them
without loading torch (``image-classifier compare --help``)."""
from __future__ import annotations

#: The study's four architectures, in the order the study presents them: what ``compare`` trains
#: when no models are named.
DEFAULT_MODELS = ("simple_cnn", "alexnet_like", "mobilenet_v2", "resnet50")
#: The model ``compare`` adds for folders of people (see ``CompareOptions.add_people_model``).
FACE_MODEL = "face_embedding"
#: How a re-run treats a run directory: "auto" reuses what matches and refuses what differs,
#: "resume" does the same but insists there is a previous run, "fresh" deletes it first
#: (see :mod:`image_classifier.study.resume`).
RESUME_MODES = ("auto", "resume", "fresh")
#: How ``compare`` picks the best model (never on the test split).
SELECTION_CRITERION = ("for a folder of people, turning away at most 10 % of strangers; then accuracy, a difference "
                       "inside the noise (95 % paired bootstrap) being a tie; then, for people, fewer strangers "
                       "accepted; then the simplest (a model, a cascade, a mix), the smallest")
