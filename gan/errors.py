"""The one exception type that reaches the user as a readable paragraph instead of a traceback."""


class UserError(Exception):
    """Bad input from the user: the message says what is wrong, what was expected and how to fix it.

    `gan.run`, `gan.evaluate` and `gan.compare` print the message alone and exit with status 2.
    """


class DivergenceError(Exception):
    """A loss became NaN or Inf: training stops before the bad update is applied or checkpointed."""
