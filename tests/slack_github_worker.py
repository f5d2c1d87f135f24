"""An activity worker with the Slack and GitHub activities, as its own process.

tests/test_slack_github_worker_kill.py SIGKILLs it in the middle of an activity, the way a
machine dies, and checks that the restarted work posts no second message and opens no second
pull request.

Usage: python -m tests.slack_github_worker CONFIG TEMPORAL_ADDRESS NAMESPACE TASK_QUEUE
"""

from __future__ import annotations

import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor

from temporalio.client import Client
from temporalio.worker import Worker

from activities.github import GitHubActivities
from activities.slack import SlackActivities
from remedy.artifacts import ArtifactStore
from remedy.config import RemedyConfig, load_config
from remedy.temporal import data_converter


def activity_worker(
    client: Client, config: RemedyConfig, task_queue: str, executor: ThreadPoolExecutor
) -> Worker:
    store = ArtifactStore(config.artifacts_dir)
    slack = SlackActivities(config, store)
    github = GitHubActivities(config, store)
    return Worker(
        client,
        task_queue=task_queue,
        activities=[slack.notify, github.open_pull_request],
        activity_executor=executor,
    )


async def main(config_path: str, address: str, namespace: str, task_queue: str) -> None:
    config = load_config(config_path)
    client = await Client.connect(address, namespace=namespace, data_converter=data_converter())
    with ThreadPoolExecutor(max_workers=4) as executor:
        await activity_worker(client, config, task_queue, executor).run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
