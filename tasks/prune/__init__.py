"""winnow tasks/prune package."""
