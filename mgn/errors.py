"""Errors a user's input causes, each printed as one line that names the problem and the fix.

``UsageError`` is bad command-line input found before any compute, by the ``mgn`` commands and by
every study's command line alike. (Config values raise ``mgn.config.ConfigError``, data sets
``mgn.data.records.DatasetError``.)
"""


class UsageError(ValueError):
    """Bad command-line input, found before any compute; printed as one line."""
