"""Anomaly scoring shared by validation, calibration and prediction: scorers, sliding window, calibration."""
