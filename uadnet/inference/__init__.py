"""Prediction: loading trained folds, sliding-window scoring of raw cases, export on the input grid."""
