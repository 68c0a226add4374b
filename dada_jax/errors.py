"""The one exception type the command line turns into an error line."""


class UserError(ValueError):
  """A problem the user can fix: bad flag, config field, file or data.

  The message is complete as it stands: one line naming the flag or file and
  what is wrong (data problems: a summary line, then one line per file).
  `dada-jax` prints it after `dada-jax COMMAND: error: ` and exits with 2.
  """
