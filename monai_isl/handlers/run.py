"""A base for handlers that follow one engine run: started, each iteration, completed."""

from __future__ import annotations

from ignite.engine import Engine, Events


class RunHandler:
    """``attach`` hooks ``started``, ``iteration_completed`` and ``completed`` of a subclass to an Ignite engine."""

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.COMPLETED, self.completed)

    def started(self, engine: Engine | None = None) -> None:
        """Reset what the handler collects: a run starts."""

    def iteration_completed(self, engine: Engine) -> None:
        """One batch is done (its output is ``engine.state.output``)."""

    def completed(self, engine: Engine | None = None) -> None:
        """The run is done."""
