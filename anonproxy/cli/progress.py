"""A download progress bar on the terminal (tqdm), for `anonproxy fetch -o FILE`.

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

    def advance(self, count: int) -> None:
        if self._bar is not None:
            self._bar.update(count)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
