"""Sending one claimed delivery, and what WeChat's answer makes of it.

Before a send (`settle_without_sending`):
- `wechat_send_max_unconfirmed` of its sends ended without a recorded outcome (`recoveries`:
  the worker died or lost its claim mid-send), or it has used all its attempts, the last one
  such an uncertain one: it may have gone out already, so it is failed without sending
  (`unconfirmed_after_recovery`).  With the default of 2, a message that may have been sent is
  repeated at most once;
- the member has unbound WeChat since it was planned: failed (`not_bound`), skipped.

The send itself (`send`), after the attempt is counted (`deliveries.begin_attempt`):
- 43101 (the member has not subscribed): recorded as `unsubscribed`, not retried;
- transient failures (-1, 5xx, timeouts, 45011): retried with exponential backoff, up to
  `wechat_send_max_attempts` attempts; any other error fails the delivery.

No database here: the worker claims before and marks after (`app.wechat.deliveries`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from app.core import clock
from app.integrations.wechat.client import WechatClient
from app.integrations.wechat.errors import WechatError, WechatNotSubscribed
from app.wechat.deliveries import FAILED, PENDING, SENT, UNSUBSCRIBED, Claimed, Outcome

logger = logging.getLogger("quyu.wechat.worker")

MAX_BACKOFF = timedelta(hours=1)

# The counter of a pass's statistics an outcome adds to.
Tally = Literal["sent", "unsubscribed", "retried", "failed", "skipped"]


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    tally: Tally


def backoff(attempts: int, base_seconds: float) -> timedelta:
    """The wait before attempt `attempts + 1`: doubling from `base_seconds`, at most an hour."""
    delay = timedelta(seconds=base_seconds * 2 ** max(0, attempts - 1))
    return min(delay, MAX_BACKOFF)


def settle_without_sending(
    delivery: Claimed, openid: str | None, *, max_attempts: int, max_unconfirmed: int
) -> Result | None:
    """The outcome of a claimed delivery that must not be sent, or None to send it."""
    # A claimed delivery that has used all its attempts lost the outcome of its last one.
    if delivery.recoveries >= max_unconfirmed or delivery.attempts >= max_attempts:
        # It may have gone out already: never risk one copy more than allowed.
        logger.warning(
            "subscribe message given up after unconfirmed sends",
            extra={
                "delivery_id": str(delivery.id),
                "attempts": delivery.attempts,
                "unconfirmed": delivery.recoveries,
            },
        )
        return Result(Outcome(FAILED, "unconfirmed_after_recovery"), "failed")
    if openid is None:
        return Result(Outcome(FAILED, "not_bound"), "skipped")
    return None


async def send(
    client: WechatClient,
    delivery: Claimed,
    openid: str,
    *,
    attempt: int,
    max_attempts: int,
    retry_base_seconds: float,
) -> Result:
    """Send `delivery` to `openid` (once, no retry inside the call) as its attempt number
    `attempt`; the outcome to record."""
    try:
        await client.send_subscribe_message(
            openid=openid,
            template_id=delivery.template_id,
            data=delivery.data,
            page=delivery.page,
            retries=0,
        )
    except WechatNotSubscribed as exc:
        return Result(Outcome(UNSUBSCRIBED, f"errcode {exc.errcode}"), "unsubscribed")
    except WechatError as exc:
        error = f"errcode {exc.errcode}" if exc.errcode is not None else exc.code
        if exc.transient and attempt < max_attempts:
            due = clock.now() + backoff(attempt, retry_base_seconds)
            return Result(Outcome(PENDING, error, next_attempt_at=due), "retried")
        logger.warning(
            "subscribe message failed",
            extra={"delivery_id": str(delivery.id), "error": error},
        )
        return Result(Outcome(FAILED, error), "failed")
    return Result(Outcome(SENT, None, sent_at=clock.now()), "sent")
