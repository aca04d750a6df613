"""What lockd's service layer hands its RPC adapter: replies and the calls to make outside.

Theory of operation
-------------------
:class:`~floatlock.nlm.service.NlmService` never touches the network.  Each handler returns an
:class:`Outcome`: the reply to send (None for void procedures) and effects.  Besides the lock
core's own effects (:mod:`floatlock.nlm.effects`) and statd's :class:`MonitorHost`, two are the
server's calls to a client's lock manager (XNFS NLM, "Asynchronous procedures"):

* :class:`SendGranted`: a queued request was granted; call NLM_GRANTED (procedure 5, awaiting
  its ``nlm_res``), or NLM_GRANTED_MSG (procedure 10) when the client asked with LOCK_MSG, in
  which case the answer arrives as a GRANTED_RES call (procedure 15) carrying the cookie of
  ``args``.  Either answer goes back through ``granted_answered``.
* :class:`SendResult`: the ``*_RES`` call (procedures 11-14) carrying the result of a ``*_MSG``
  request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from floatlock.nlm import effects as fx
from floatlock.nlm.hosts import Host, MonitorHost
from floatlock.nlm.proto import NlmLock, NlmProc, Res, ShareRes, TestArgs, TestRes
from floatlock.nlm.records import BlockedLock

__all__ = ["Effect", "Outcome", "SendGranted", "SendResult", "Waiting"]


@dataclass(frozen=True, slots=True)
class SendGranted:
    """Call NLM_GRANTED (or NLM_GRANTED_MSG when ``msg``), version ``vers``, on ``host`` from
    ``host.server``; report the answer with :meth:`NlmService.granted_answered`."""

    host: Host
    vers: int
    args: TestArgs
    blocked: BlockedLock
    msg: bool = False


@dataclass(frozen=True, slots=True)
class SendResult:
    """Call ``proc`` (a ``*_RES`` procedure) on ``host``'s NLM with the encoded ``result``."""

    host: Host
    vers: int
    proc: NlmProc
    result: TestRes | Res | ShareRes


Effect = SendGranted | SendResult | MonitorHost | fx.Effect


@dataclass(slots=True)
class Outcome:
    """What a handler decided: the reply (None for void) and what to do outside."""

    reply: Any
    effects: list[Effect] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Waiting:
    """What lockd needs to send NLM_GRANTED (or GRANTED_MSG: ``msg``) for a queued request."""

    host: Host
    vers: int
    cookie: bytes
    lock: NlmLock
    exclusive: bool
    msg: bool = False
