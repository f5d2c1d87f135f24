"""The starter's Temporal client: one per process (intake, CLI), built from remedy.temporal."""

from __future__ import annotations

from temporalio.client import Client

from remedy.config import RemedyConfig
from remedy.temporal import connect_options


async def connect(config: RemedyConfig) -> Client:
    return await Client.connect(**connect_options(config))
