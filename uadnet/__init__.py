"""uadnet: self-configuring unsupervised anomaly detection for medical images.

The package layout mirrors the pipeline: ``imageio`` (read/write) → ``dataset`` (raw folder conventions,
integrity) → ``planning`` (fingerprint, planner) → ``preprocessing`` → later stages. ``plans.py`` (the plans
schema) and ``paths.py`` (environment folders) sit at the bottom because every stage reads them.
"""

__version__ = "0.1.0"
