"""Packaged resources: the quickstart experiment config."""
