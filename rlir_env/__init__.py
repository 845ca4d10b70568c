"""Gymnasium environments backed by video world models (registered on import)."""
