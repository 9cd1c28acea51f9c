"""Shared pytest configuration; its presence puts tests/ on sys.path for helper modules."""
