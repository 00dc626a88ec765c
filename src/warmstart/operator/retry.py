"""Per node and image: failed pre-warms and when to try again (pure).

The backoff is ``warmstart serve``'s pre-warm backoff (:func:`warmstart.serving.prewarm_retry.
prewarm_retry_delay`): 10 s after the first failure, doubling up to 5 min.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from warmstart.serving.prewarm_retry import PrewarmFailure, prewarm_failed, prewarm_retry_delay

Key = tuple[str, str]  # (node, image reference)


@dataclass
class Attempts:
    failures: dict[Key, PrewarmFailure] = field(default_factory=dict)
    errors: dict[Key, str] = field(default_factory=dict)

    def due(self, key: Key, now: float) -> bool:
        """Whether a pre-warm of ``key`` may start now (never failed, or its backoff is over)."""
        failure = self.failures.get(key)
        return failure is None or now - failure.at >= prewarm_retry_delay(failure.count)

    def failed(self, key: Key, now: float, error: str) -> None:
        self.failures[key] = prewarm_failed(self.failures.get(key), now)
        self.errors[key] = error

    def succeeded(self, key: Key) -> None:
        self.failures.pop(key, None)
        self.errors.pop(key, None)

    def error(self, node: str, images: tuple[str, ...] | list[str]) -> str | None:
        """The last error of any of ``images`` on ``node`` (still failing), if any."""
        for ref in images:
            if (node, ref) in self.errors:
                return f"{ref}: {self.errors[node, ref]}"
        return None

    def retry_in(self, key: Key, now: float) -> float:
        failure = self.failures.get(key)
        if failure is None:
            return 0.0
        return max(0.0, failure.at + prewarm_retry_delay(failure.count) - now)
