"""Data layer: interactions, data sets, filtering, splits and sources."""
