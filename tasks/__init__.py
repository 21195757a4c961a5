"""winnow tasks package."""
