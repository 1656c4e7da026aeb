"""Monogram: the naive Instagram architecture as one aiohttp service."""
