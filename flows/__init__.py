"""winnow flows package."""
