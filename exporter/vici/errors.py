"""The one family of errors every VICI call can raise."""


class ViciError(Exception):
    """A VICI call did not give an answer the caller can use."""


class ViciConnectionError(ViciError):
    """charon cannot be reached: socket missing, refused, closed, or the call timed out."""


class ViciProtocolError(ViciError):
    """charon (or something posing as it) sent bytes that are not a valid VICI answer."""


class ViciCommandError(ViciError):
    """charon answered, but refused the command (unknown command or `success = no`)."""
