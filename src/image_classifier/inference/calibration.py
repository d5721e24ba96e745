"""The card's temperatures: read, applied to logits, and undone on calibrated probabilities.

A model's probabilities are ``softmax(logits / T)``, with ``T`` fitted on the validation split
after training (:mod:`image_classifier.trust`) and stored in the card's ``calibration`` key (a
kind of model with more than one, per image, says which: ``Model.temperatures``). A card
without the key (a model trained before calibration existed) has ``T = 1``: its probabilities
are what they always were.

Dividing logits by ``T > 0`` never changes which class is largest, so calibration changes the
probabilities and never the predicted label.

The inverse is exact up to a per-row constant: ``log p_c = z / T - c``, so ``T * log p_c`` is the
logits up to a constant and ``softmax(T * log p_c)`` the uncalibrated probabilities. That is how
``evaluate`` reports log-loss and ECE before calibration without a second forward pass.

numpy only (the ONNX backends run without torch).
"""
from __future__ import annotations


import numpy as np

from image_classifier.card import ModelCard

# The smallest positive float32: a calibrated probability that underflowed to 0 is read as this.
_TINY = float(np.finfo(np.float32).tiny)


def card_temperature(card: ModelCard | None) -> float:
    """The temperature of the network's probabilities (1.0 for a card without calibration)."""
    value = card.calibration.temperature if card is not None and card.calibration is not None else None
    return float(value) if value else 1.0


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise ``softmax(logits / temperature)`` in float64, stable for large logits."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def log_probabilities(probs: np.ndarray) -> np.ndarray:
    """``log p`` (float64), a probability that underflowed to 0 read as the smallest float32."""
    return np.log(np.clip(np.asarray(probs, dtype=np.float64), _TINY, 1.0))


def rescale(probs: np.ndarray, factor: float | np.ndarray) -> np.ndarray:
    """``softmax(factor * log probs)``: probabilities of temperature ``T`` become those of
    temperature ``T / factor``. ``factor`` is one number or one per row."""
    factor = np.asarray(factor, dtype=np.float64)
    if factor.ndim == 1:
        factor = factor[:, None]
    return softmax(factor * log_probabilities(probs))


def uncalibrated(probs: np.ndarray, temperatures: np.ndarray) -> np.ndarray:
    """The probabilities a model gave before calibration, from the calibrated ``probs`` it gives
    now and the temperature that made each row (``Model.temperatures``). Float32, rows summing
    to 1; equal to ``probs`` where every temperature is 1."""
    probs = np.asarray(probs)
    if len(probs) == 0 or np.all(temperatures == 1.0):
        return probs.astype(np.float32, copy=False)
    return rescale(probs, temperatures).astype(np.float32)
