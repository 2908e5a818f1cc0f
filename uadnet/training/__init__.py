"""Training: data loading (``dataloading``) for the restoration networks."""
