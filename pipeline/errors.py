"""The one exception type that reaches users as a one-line message instead of a traceback."""


class PipelineError(Exception):
    """A problem with the user's input or environment.

    The message must name the file (or URL), the field when there is one, and what to do about it;
    the command-line entry prints it on one line and exits non-zero.
    """
