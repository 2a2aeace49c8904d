"""One request's reply and the ways to it: through the interaction token while it lasts (15
minutes, given up `TOKEN_MARGIN` seconds early), then as a post in the channel.

`Reply` is what the Imagine cog knows of the message that shows a request (a job or a group)
from queue to result; `ReplyIO` edits it through its token (or the token's webhook, for a reply
restored from the store after a restart), drops a token Discord refuses, and falls back to the
channel: a reply there that mentions the member, with a nonce derived from the request (a
repeated post after a crash returns the message already posted), after the old reply is edited,
when Discord allows it, to point to the result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import discord

from bot.app import ComfyBot
from bot.delivery import Coalescer
from bot.jobs.model import Job
from bot.jobs.progress import JobUpdate
from cogs._common import clip

log = logging.getLogger(__name__)

TOKEN_LIFETIME = 15 * 60
TOKEN_MARGIN = 30  # stop using an interaction token this long before it expires
# An interaction webhook's "@original" message: the reply, when its message id is not known.
_ORIGINAL: Any = "@original"
MAX_FILES = 10  # files in one message
DEFAULT_SIZE_LIMIT = 10 * 1024 * 1024


@dataclass
class Reply:
    """The message that shows one request (a job or a group) from queue to result."""

    key: str
    job_ids: list[str]
    channel_id: int
    owner_id: int
    interaction: discord.Interaction | None = None
    webhook: discord.Webhook | None = None  # the token's webhook, for a reply restored from store
    message_id: int | None = None
    expires_at: float = 0.0
    size_limit: int = DEFAULT_SIZE_LIMIT
    latest: dict[str, JobUpdate] = field(default_factory=dict)
    preview: tuple[bytes, str] | None = None
    coalescer: Coalescer[None] | None = None
    finalizing: bool = False
    # what it costs and shows: requests made, positions shown, when the jobs started to run
    sent: int = 0
    shown: dict[str, int] = field(default_factory=dict)
    shown_at: float = 0.0
    run_started: float | None = None
    running_edits: int = 0
    waiting_edits: int = 0
    start_skipped: bool = False
    acked: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def of(cls, interaction: discord.Interaction, jobs: list[Job]) -> Reply:
        """The reply of a new request, its token valid `TOKEN_LIFETIME` from the interaction."""
        first = jobs[0]
        created = interaction.created_at.timestamp()
        return cls(
            key=first.group_id or first.id,
            job_ids=[j.id for j in jobs],
            channel_id=interaction.channel_id or 0,
            owner_id=interaction.user.id,
            interaction=interaction,
            expires_at=min(created, time.time()) + TOKEN_LIFETIME,
            size_limit=interaction.filesize_limit,
        )

    def token_usable(self) -> bool:
        has_token = self.interaction is not None or self.webhook is not None
        return has_token and time.time() < self.expires_at - TOKEN_MARGIN

    def token_ending(self) -> bool:
        """Less than one more margin before the token is given up: time for a last word."""
        return self.expires_at - time.time() <= 2 * TOKEN_MARGIN

    def nonce(self, part: int = 0) -> str:
        """The nonce of this reply's `part`-th channel post: the same after any restart."""
        return f"cc:{self.key}:{part}"


class ReplyIO:
    """Edits a reply through its token, or posts its result in the channel."""

    def __init__(self, bot: ComfyBot) -> None:
        self.bot = bot
        self.engine = bot.engine

    def restore(self, job: Job) -> Reply | None:
        """The reply of a stored job, with its token's webhook while the token is valid."""
        meta = job.meta.get("reply")
        if not meta:
            return None
        key = str(meta["key"])
        group = self.engine.store.group(job.group_id) if job.group_id else [job]
        message_id = meta.get("message_id")
        reply = Reply(
            key=key,
            job_ids=[j.id for j in group],
            channel_id=int(meta["channel_id"]),
            owner_id=int(meta["owner_id"]),
            message_id=int(message_id) if message_id else None,
            expires_at=float(meta.get("expires_at") or 0.0),
            size_limit=int(meta.get("size_limit") or DEFAULT_SIZE_LIMIT),
        )
        token = self.engine.reply_token(key)
        application_id = meta.get("application_id")
        if token and application_id:
            reply.webhook = discord.Webhook.partial(int(application_id), token, client=self.bot)
        reply.acked.set()
        return reply

    def drop_token(self, reply: Reply) -> None:
        """The reply's token no longer works: forget it (results then go to the channel)."""
        reply.interaction = None
        reply.webhook = None
        self.engine.forget_reply_token(reply.key)

    async def edit(self, reply: Reply, **fields: Any) -> discord.Message | None:
        """Edit the reply through its interaction token (repeating an edit is harmless); None
        when there is no token any more.

        A token Discord refuses (expired, or the request was never acknowledged) is dropped.
        """
        await reply.acked.wait()
        try:
            if reply.interaction is not None:
                return await reply.interaction.edit_original_response(**fields)
            if reply.webhook is None:
                return None
            return await reply.webhook.edit_message(reply.message_id or _ORIGINAL, **fields)
        except discord.HTTPException as exc:
            if exc.status in (401, 404) or exc.code in (50027, 10015, 10008):
                self.drop_token(reply)
            raise

    async def followup(self, reply: Reply, files: list[discord.File]) -> None:
        if reply.interaction is not None:
            await reply.interaction.followup.send(files=files)
        elif reply.webhook is not None:
            await reply.webhook.send(files=files)

    async def send_to_channel(
        self,
        reply: Reply,
        content: str,
        embed: discord.Embed,
        view: discord.ui.View,
        first_batch: list[discord.File],
        rest: list[discord.File],
    ) -> discord.Message:
        """Post the result in the channel, as a reply to the old message when there is one;
        the files past the first `MAX_FILES` follow in more posts."""
        channel = self.bot.get_partial_messageable(reply.channel_id)
        mention = f"<@{reply.owner_id}>"
        # no reference at all when there is no old message (a `None` one is not typed)
        extra: dict[str, Any] = {}
        if reply.message_id:
            extra["reference"] = discord.MessageReference(
                message_id=reply.message_id, channel_id=reply.channel_id, fail_if_not_exists=False
            )
        message = await channel.send(
            content=clip(content if mention in content else f"{mention} {content}", 2000),
            embed=embed,
            files=first_batch,
            nonce=reply.nonce(0),
            view=view,
            allowed_mentions=discord.AllowedMentions(users=[discord.Object(reply.owner_id)]),
            **extra,
        )
        for part, start in enumerate(range(0, len(rest), MAX_FILES), start=1):
            await channel.send(files=rest[start : start + MAX_FILES], nonce=reply.nonce(part))
        return message

    async def point_to_result(self, reply: Reply) -> None:
        """Edit the old reply (with the bot token) so it no longer shows a queue or a Cancel
        button but points to the result, which answers it in the channel; done before that
        post, so a crash in between leaves nothing stale (both are repeated). Not every reply
        allows it, which is fine."""
        if not reply.message_id:
            return
        channel = self.bot.get_partial_messageable(reply.channel_id)
        try:
            await channel.get_partial_message(reply.message_id).edit(
                content="✅ Done: the result is posted in this channel as a reply to this message.",
                embed=None,
                attachments=[],
                view=None,
            )
        except discord.HTTPException as exc:
            log.info("could not edit the old reply of %s (%s)", reply.key, exc.status)
