"""Recommenders. Each module registers its models; see ``modalrec.models.registry``."""
