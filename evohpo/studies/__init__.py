"""Study files: their configuration, the studies they describe, comparison, export, dashboard."""
