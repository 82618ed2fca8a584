"""`noex_lab.statem`: state machines (OTP's gen_statem). `StateMachine` (also in `noex_lab`)
and what its callbacks return: the transition helpers and the three kinds of timeout."""

from .core.statem import (
    EventTimeout,
    GenericTimeout,
    KeepState,
    MachineState,
    NextEvent,
    Postpone,
    RepeatState,
    Reply,
    StateMachine,
    StateTimeout,
)

__all__ = [
    "EventTimeout",
    "GenericTimeout",
    "KeepState",
    "MachineState",
    "NextEvent",
    "Postpone",
    "RepeatState",
    "Reply",
    "StateMachine",
    "StateTimeout",
]
