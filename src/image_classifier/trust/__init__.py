"""Answers a person can trust: what is fitted on a trained model's validation split after
training and stored in its card (:mod:`.fit`), starting with calibration (:mod:`.temperature`:
one temperature so that the probabilities mean what they say) and the "none of these" rule
(:mod:`.rejection`).

The layer sits between ``inference`` (it predicts with the saved model) and ``export`` (an
export writes the calibrated network). Import the modules directly: this file imports nothing.
"""
