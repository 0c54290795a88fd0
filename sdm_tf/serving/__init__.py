"""Serving: the exported user tower, FAISS indexes and the HTTP retrieval service."""
