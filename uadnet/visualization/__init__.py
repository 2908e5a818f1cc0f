"""Figures a user looks at instead of reading JSON."""
