"""Dataset fingerprint (what the data is) and planner (what to do with it: a pure function)."""
