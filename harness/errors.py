"""One exception family: every user-facing failure carries the one line the CLI prints."""


class HarnessError(Exception):
    """A problem the user can fix. ``str(err)`` is one line: what is wrong, what to do."""

    exit_code = 2

    def __init__(self, message: str):
        # Keep it to one line whatever the caller built.
        super().__init__(" ".join(str(message).split()))


class DiscoveryError(HarnessError):
    """The cluster (or inventory) could not be turned into a Target."""

    forbidden = False  # a 403: callers may fall back to another source
    not_found = False


class LabError(HarnessError):
    """The embedded lab could not start or be reached."""


class ReportError(HarnessError):
    """A run folder could not be read or written."""


class DataError(HarnessError):
    """Saved data (spread.json, run.json, ...) is not in a form this version reads."""
