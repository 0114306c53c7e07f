"""The one exception type that means "the user gave something wrong; here is what to do".

Library code raises :class:`UserError` with a message that names what was wrong and the fix;
the CLI prints that message as one line and exits non-zero. Anything else is a bug.
"""


class UserError(Exception):
    """Bad input or environment, with a message that says what was wrong and what to do."""
