"""Placeholder: prune tables (being written by their owner)."""

DDL: list[str] = []
