"""Bringing models trained elsewhere into the store: :mod:`shoal.importers.caffe` (Caffe and DIGITS)."""
