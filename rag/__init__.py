"""Offline, Chinese-first RAG assistant over deep-learning interview notes."""

__version__ = "0.1.0"
