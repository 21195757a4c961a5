"""winnow tasks/mixture package."""
