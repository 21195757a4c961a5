"""Placeholder: scaling tables (being written by their owner)."""

DDL: list[str] = []
