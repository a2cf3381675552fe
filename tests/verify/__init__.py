"""Tests of meshplan.verify: one module per part, plus the cross-check against nca."""
