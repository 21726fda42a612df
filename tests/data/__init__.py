"""Tests of ``trainwell.data``: every format fabricated in ``tmp_path``, the real datasets when present."""
