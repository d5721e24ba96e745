"""What a study found, typed (``metrics.json``): the schema (:mod:`.schema`), the comparison table
(:mod:`.table`) and :class:`Study` (:mod:`.study`). Importing it is light (``--help`` does)."""
from image_classifier.results.schema import (
    BackendComparison, BackendUsed, Calibration, CandidateEvidence, ClassScores, DataSummary, DuplicateGroup,
    Duplicates, EnsembleInfo, EnsembleMember, Environment, ExportInfo, FaceAccuracy, FaceSummary, Misclassified,
    ModelResult, OpenSet, PairwiseTest, Selection, ServeChoice, ShortcutAudit, Speed, SplitInfo, TestMetrics,
    Training, Validation,
)
from image_classifier.results.study import TEST_IMAGES, Study
from image_classifier.results.table import COLUMNS, NOTEBOOK_COLUMNS, _pandas, model_row

__all__ = [
    "BackendComparison", "BackendUsed", "COLUMNS", "Calibration", "CandidateEvidence", "ClassScores", "DataSummary",
    "DuplicateGroup", "Duplicates", "EnsembleInfo", "EnsembleMember", "Environment", "ExportInfo", "FaceAccuracy",
    "FaceSummary", "Misclassified", "ModelResult", "NOTEBOOK_COLUMNS", "OpenSet", "PairwiseTest", "Selection",
    "ServeChoice", "ShortcutAudit", "Speed", "SplitInfo", "Study", "TEST_IMAGES", "TestMetrics", "Training",
    "Validation", "_pandas", "model_row",
]
