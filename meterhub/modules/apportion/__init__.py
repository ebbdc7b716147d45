"""Apportioning (公摊): a parent meter's usage, less its sub-meters, priced and shared among accounts."""
