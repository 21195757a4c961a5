"""winnow tasks/scaling package."""
