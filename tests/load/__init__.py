"""Tests of meshplan.load: one module per part (files, parse, document, repository)."""
