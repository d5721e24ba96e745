"""``image-classifier sort``: a folder of photos answered by a saved model, into CSV files and class folders.

From Python: ``from image_classifier.sorting.run import SortOptions, sort_folder``. The package's
modules, lightest first: :mod:`.options` (what a sort is asked to do), :mod:`.journal` (what it
keeps in the output folder, so that an interrupted run continues where it stopped), :mod:`.early`
(the folder listed and the face workers started before PyTorch loads), :mod:`.run` (the rest).
Nothing is imported here, so that the command line can start the face workers first.
"""
