"""Conversion to and from other frameworks' formats; each module imports its framework lazily."""
