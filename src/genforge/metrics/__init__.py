"""Metrics: pure numeric cores (``core``), feature extractors (``classifier``, ``inception``, chosen
by name in ``extractors``) and the orchestration that joins them (``evaluate``)."""
