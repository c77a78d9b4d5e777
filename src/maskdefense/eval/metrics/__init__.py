"""Metrics computed from evaluation records: :mod:`.detection` for defenses that reject inputs
(detection rate, false-positive rate, ROC and AUC, accuracy under both conventions). The classifier's
protocol and robust accuracies are computed in :func:`maskdefense.eval.report.summarize`."""
