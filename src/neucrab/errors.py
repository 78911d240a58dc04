"""The exception types neucrab raises for bad input, and for a file it could not write."""


class InputError(ValueError):
    """Bad input: the message is one line naming what is wrong and what was expected."""


class CacheWriteError(OSError):
    """A file neucrab had to write (cache entry, record, report) could not be written: disk full, no permission.
    Not one unit's failure but the run's: it stops the run with one line naming the path (nothing partial is
    left, and the next run recomputes what is missing)."""

    def __init__(self, path, error: OSError):
        super().__init__(error.errno, error.strerror)
        self.path = path
        self.message = f"cannot write {path} ({error.strerror or error})"

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # survives pickling (a Ray worker's failure reaches the driver as itself)
        return type(self), (self.path, OSError(self.errno, self.strerror))
