"""kneel: anatomical landmarks in knee radiographs (a re-implementation of KNEEL, arXiv 1907.12237)."""

__version__ = "0.1.0"
