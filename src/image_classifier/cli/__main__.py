import sys

from image_classifier.cli import main

sys.exit(main())
