"""Measures, the resumable experiment grid and the study's tables."""
