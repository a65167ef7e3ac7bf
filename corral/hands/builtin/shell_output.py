"""The shell's end-of-command protocol: an unguessable sentinel line, and one command's output read up to it.

Each command is sent to the persistent shell as

    eval '<cmd>' </dev/null 2>&1; builtin printf '\\n<token>:%d\\n' $?

(see `BashSession`), and its output is read until the sentinel line `<token>:<number>`. The random token means
the command's own output cannot fake the end of the command. The same line carries other numbers back from the
shell: its own PID at startup (`$$`), a background job's PID (`$!`).
"""

from __future__ import annotations


def sentinel(token: str, value: str) -> str:
    """The shell command that prints the sentinel line carrying `value` (a shell expression such as `$?`)."""
    return f"builtin printf '\\n{token}:%d\\n' {value}"


class OutputCapture:
    """Accumulates one command's output up to a cap while watching for the sentinel line."""

    def __init__(self, token: str, limit: int) -> None:
        self._marker = f"\n{token}:".encode()
        self._limit = limit
        self._head = bytearray()
        self._window = bytearray()
        self.total = 0
        self.exit_code: int | None = None
        self.leftover = b""

    def feed(self, chunk: bytes) -> bool:
        """Take more output; True once the sentinel line has been seen completely."""
        self._window += chunk
        idx = self._window.find(self._marker)
        if idx >= 0:
            start = idx + len(self._marker)
            nl = self._window.find(b"\n", start)
            if nl < 0:
                return False
            self._keep(self._window[:idx])
            self.exit_code = int(self._window[start:nl])
            self.leftover = bytes(self._window[nl + 1 :])
            self._window.clear()
            return True
        # Hold back a possible partial marker at the end; everything before it is plain output.
        safe = len(self._window) - (len(self._marker) - 1)
        if safe > 0:
            self._keep(self._window[:safe])
            del self._window[:safe]
        return False

    def flush(self) -> None:
        """No sentinel is coming (EOF or timeout): everything held back is output."""
        self._keep(self._window)
        self._window.clear()

    def _keep(self, data: bytes | bytearray) -> None:
        self.total += len(data)
        room = self._limit - len(self._head)
        if room > 0:
            self._head += data[:room]

    def output(self) -> bytes:
        """The captured output as it came (up to the cap)."""
        return bytes(self._head)

    def text(self) -> str:
        """The captured output, with a note when it was cut."""
        out = self._head.decode("utf-8", errors="replace")
        if self.total > self._limit:
            out += f"\n[output truncated: showing the first {self._limit // 1024} KiB of {self.total} bytes]"
        return out
