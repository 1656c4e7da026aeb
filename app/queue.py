"""Job queues: SQS, served by moto in the embedded stack and by AWS in production.

Two queues, one per kind of job: media jobs (a V1 upload's media id, SQS_QUEUE_NAME) and the
feed's fan-out jobs (a post id, FANOUT_QUEUE_NAME, app/fanout.py). A job is the id it is
about. Delivery is at least once: a worker deletes a job once it is done; one that dies
mid-job, or asks for a retry, has the job delivered again after the visibility timeout. For
media the database, not the queue, says what is done (media.status), so a lost message or a
queue that restarted empty costs time, never an upload: the stuck-job sweep (app/sweep.py)
sends those jobs again.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import orjson
from aiobotocore.config import AioConfig
from botocore.exceptions import ClientError

from app.settings import Settings
from app.storage import s3_session

log = logging.getLogger(__name__)

# The longest SQS lets a receive wait for a job (long polling).
MAX_WAIT_SECONDS = 20
# What SQS (and moto) call a queue that does not exist, with the JSON and the query protocol.
MISSING_QUEUE = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"}


@dataclass(frozen=True, slots=True)
class Job:
    subject_id: int  # the media id of a media job, the post id of a fan-out job
    receipt: str  # what deletes it, or puts it back
    attempt: int  # 1 on its first delivery


@dataclass
class JobQueue:
    client: Any  # aiobotocore's SQS client: no static types
    name: str
    visibility_timeout: int
    field: str = "media_id"  # the JSON field of a job's body that holds its id
    url: str = ""

    async def ensure(self) -> None:
        """Make the queue if it is missing (a restarted moto has none), and learn its URL."""
        answer = await self.client.create_queue(
            QueueName=self.name,
            Attributes={
                "VisibilityTimeout": str(self.visibility_timeout),
                "MessageRetentionPeriod": str(4 * 24 * 3600),
            },
        )
        self.url = answer["QueueUrl"]

    async def send(self, subject_id: int) -> None:
        body = orjson.dumps({self.field: subject_id}).decode()
        await self._call("send_message", MessageBody=body)

    async def receive(self, most: int, wait_seconds: int) -> list[Job]:
        """Up to `most` jobs, waiting up to `wait_seconds` for the first."""
        answer = await self._call(
            "receive_message",
            MaxNumberOfMessages=most,
            WaitTimeSeconds=min(wait_seconds, MAX_WAIT_SECONDS),
            MessageSystemAttributeNames=["ApproximateReceiveCount"],
        )
        jobs = []
        for message in answer.get("Messages", []):
            try:
                subject_id = int(orjson.loads(message["Body"])[self.field])
            except (ValueError, KeyError, TypeError):
                log.error("a job on queue %s has no %s; deleting it", self.name, self.field)
                await self._call("delete_message", ReceiptHandle=message["ReceiptHandle"])
                continue
            attempt = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
            jobs.append(Job(subject_id, message["ReceiptHandle"], attempt))
        return jobs

    async def done(self, job: Job) -> None:
        await self._call("delete_message", ReceiptHandle=job.receipt)

    async def retry_in(self, job: Job, seconds: int) -> None:
        """Deliver the job again, to any worker, after `seconds`."""
        await self._call(
            "change_message_visibility", ReceiptHandle=job.receipt, VisibilityTimeout=seconds
        )

    async def depth(self) -> tuple[int, int]:
        """Jobs waiting, and jobs taken by a worker and not yet done."""
        answer = await self._call(
            "get_queue_attributes",
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        attributes = answer.get("Attributes", {})
        return (
            int(attributes.get("ApproximateNumberOfMessages", 0)),
            int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
        )

    async def _call(self, operation: str, **params: Any) -> Any:
        if not self.url:
            await self.ensure()
        try:
            return await getattr(self.client, operation)(QueueUrl=self.url, **params)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in MISSING_QUEUE:
                raise
        # The queue went away (a restarted moto): make it again. Its jobs went with it; the
        # stuck-job sweep sends them again.
        log.warning("the job queue %s was missing; made it again", self.name)
        await self.ensure()
        return await getattr(self.client, operation)(QueueUrl=self.url, **params)


def queue_config(settings: Settings) -> AioConfig:
    return AioConfig(
        connect_timeout=settings.s3_timeout,
        # A receive may wait MAX_WAIT_SECONDS for a job before it answers.
        read_timeout=settings.s3_timeout + MAX_WAIT_SECONDS,
        retries={"total_max_attempts": 3, "mode": "standard"},
    )


@asynccontextmanager
async def open_queue(settings: Settings) -> AsyncIterator[JobQueue]:
    """The media job queue for as long as the block runs; made on first use if missing."""
    async with s3_session(settings).client(
        "sqs", endpoint_url=settings.queue_endpoint_url, config=queue_config(settings)
    ) as client:
        yield JobQueue(client, settings.sqs_queue_name, settings.job_visibility_timeout)


@asynccontextmanager
async def open_fanout_queue(settings: Settings) -> AsyncIterator[JobQueue]:
    """The feed's fan-out job queue (a post id each) for as long as the block runs."""
    async with s3_session(settings).client(
        "sqs", endpoint_url=settings.queue_endpoint_url, config=queue_config(settings)
    ) as client:
        yield JobQueue(
            client, settings.fanout_queue_name, settings.job_visibility_timeout, "post_id"
        )
