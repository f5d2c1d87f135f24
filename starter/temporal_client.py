"""The starter's Temporal client: one per process (intake, CLI), built from remedy.temporal.

Temporal may be down, or not up yet: the intake waits for it in the background
(`connect_in_background`), a CLI command says so in one line (TemporalUnreachable).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from remedy.config import RemedyConfig
from remedy.temporal import (
    TemporalUnreachable,
    address_of,
    reach,
    reach_retrying,
    unreachable_reason,
)

T = TypeVar("T")


async def connect(config: RemedyConfig) -> Client:
    return await reach(Client.connect, config)


def connect_in_background(
    config: RemedyConfig, connected: Callable[[Client], None]
) -> asyncio.Task[None]:
    """Keep trying in a task (cancel it to give up); `connected` gets the client once it is up."""

    async def _connect() -> None:
        connected(await reach_retrying(Client.connect, config))

    return asyncio.create_task(_connect(), name="connect-temporal")


async def with_client(config: RemedyConfig, work: Callable[[Client], Awaitable[T]]) -> T:
    """Connect and run `work`; Temporal going away at any point is TemporalUnreachable."""
    client = await connect(config)
    try:
        return await work(client)
    except RPCError as exc:
        if exc.status == RPCStatusCode.UNAVAILABLE:
            raise TemporalUnreachable(address_of(config), unreachable_reason(exc)) from None
        raise


def cli_message(exc: TemporalUnreachable) -> str:
    """The one line a command prints (after 'error: ') when Temporal is not there."""
    return f"{exc}; is `remedy dev` running?"
