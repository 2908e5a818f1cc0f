"""Crop to foreground → normalise → resample, and the exact inverse for export."""
