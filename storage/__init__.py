"""Persistence: the database (SQLAlchemy 2), its repositories and the image files.

Nothing here imports Discord, torch or any other Brushwork package.  Callers get plain
frozen dataclasses from :mod:`storage.records`; ORM rows never leave this package.
"""
