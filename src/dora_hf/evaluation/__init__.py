"""Downstream evaluation and pictures of what a DoRA model tracks."""
