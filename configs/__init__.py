"""winnow configs package."""
