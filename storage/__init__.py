"""winnow storage package."""
