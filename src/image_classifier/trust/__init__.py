"""Answers a person can trust, fitted after training on the validation split only: the rejection
rule ("none of these", :mod:`.rejection`) and the temperature (calibration), stored in the card."""
