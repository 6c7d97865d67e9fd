"""The one base class for errors ralm-es reports to users as a single clear line (no traceback)."""


class RalmError(Exception):
    """An error whose message names what went wrong and where (file:line, index, setting)."""
