"""The two errors a run ends with a message for: a ``ConfigError`` (bad input, exit code 2) and a ``RunFault`` (a run
that started well and could not finish, exit code 1). Both messages are one paragraph; ``cli.main`` prints them."""


class ConfigError(ValueError):
    """A configuration or input file the pipeline cannot run with; raised before any training starts."""


class RunFault(RuntimeError):
    """A fault during the run (training diverged, a DDP rank stopped): the message says what happened and which
    option to change; whatever was written before it stays valid, and no results.json is written."""
