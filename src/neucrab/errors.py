"""The one exception type neucrab raises for bad input."""


class InputError(ValueError):
    """Bad input: the message is one line naming what is wrong and what was expected."""
