"""helpers: the small, tested package behind the next-item prediction course.

Import the module you need explicitly, e.g. ``from helpers import data, evaluate``.
"""

__version__ = "0.1.0"
