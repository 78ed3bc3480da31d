"""Progress bars on the terminal (tqdm): a download for `anonproxy fetch -o FILE`, tor's
bootstrap for fetch and exec.

The only module that imports tqdm. Shown only when stderr is a terminal; piped or redirected
runs stay quiet.
"""

from __future__ import annotations

import sys


class Progress:
    def __init__(self, label: str) -> None:
        self.label = label
        self._bar = None

    @classmethod
    def for_terminal(cls, label: str) -> Progress | None:
        return cls(label) if sys.stderr.isatty() else None

    def start(self, total: int | None) -> None:
        from tqdm import tqdm

        self.close()
        self._bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                         desc=self.label, file=sys.stderr, leave=True)

    def start_percent(self) -> None:
        """A bar from 0 to 100 % whose text after it says what is happening (`say`)."""
        from tqdm import tqdm

        self.close()
        self._bar = tqdm(total=100, unit="%", desc=self.label, file=sys.stderr, leave=False,
                         bar_format="{desc}: {percentage:3.0f}%|{bar:20}| {postfix}")

    def set(self, value: int, say: str = "") -> None:
        if self._bar is not None:
            self._bar.n = value
            self._bar.set_postfix_str(say, refresh=False)
            self._bar.refresh()

    def advance(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
