"""``python -m image_classifier``: the command line, also what ``torchrun ... -m image_classifier train`` starts."""
import sys

from image_classifier.cli import main

sys.exit(main())
