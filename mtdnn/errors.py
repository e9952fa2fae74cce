"""Exceptions the CLI turns into a message and an exit status instead of a traceback."""

import signal


class MTDNNError(Exception):
    """A problem with the user's input (config, data, paths) stated in one paragraph.

    The message must say what was wrong, where (file, line, key) and what to do about it.
    """


class StoppedBySignal(Exception):
    """SIGINT/SIGTERM arrived during training: the current step finished and a checkpoint was written."""

    def __init__(self, signal_number: int, checkpoint):
        super().__init__(f"stopped by {signal.Signals(signal_number).name}; checkpoint {checkpoint} written, "
                         "continue with --resume")
        self.signal_number, self.checkpoint = signal_number, checkpoint
