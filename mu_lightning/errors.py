"""The one error type a user's bad input raises: the message names the option, the bad value and what is allowed."""


class ConfigError(ValueError):
    """A configuration or input file the pipeline cannot run with; raised before any training starts."""
