"""One error type for bad input: it names the option (or config key) and the fix."""


class PriError(ValueError):
    def __init__(self, option: str, message: str):
        self.option = option
        self.message = message
        super().__init__(f"{option}: {message}")
