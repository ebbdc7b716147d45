"""Portal sign-in: phone numbers, candidates across groups (SECURITY DEFINER look-ups), passwords,
one-time codes in Redis (hashed, short-lived, limited attempts) issued and sent by an rq job through the
group's SMS notifier (so asking for a code costs the same whether the phone is known or not), and sign-in
rate limits."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
from pathlib import Path

from flask import current_app
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from ..db import use_group
from ..errors import RateLimited, ValidationError
from ..i18n import _l
from ..extensions import db
from ..models import utcnow
from ..redis_conn import get_redis, redis_key
from ..tenants.auth import LoginThrottle

log = logging.getLogger(__name__)
PHONE = re.compile(r"^\+?\d{6,20}$")
CODE_TTL = 300
CODE_ATTEMPTS = 5
RESEND_AFTER = 60


def normalize_phone(raw: str) -> str:
    """A phone number without spaces or dashes; ValidationError when it is not one."""
    phone = re.sub(r"[\s\-()]", "", raw or "")
    if not PHONE.match(phone):
        raise ValidationError(_l("Enter a phone number of 6 to 20 digits."), {"phone": "invalid"})
    return phone


def candidate_groups(session: Session, phone: str) -> list[int]:
    """Groups where ``phone`` is a portal user, invited, or the phone of an account (oldest first)."""
    groups: list[int] = []
    for fn in ("meterhub_portal_lookup", "meterhub_portal_invitation_lookup", "meterhub_portal_account_lookup"):
        for row in session.execute(text(f"SELECT group_id FROM {fn}(:p)"), {"p": phone}):
            if row.group_id not in groups:
                groups.append(row.group_id)
    return groups


def portal_users(session: Session, phone: str) -> list[tuple[int, int]]:
    """(portal user id, group id) of every active portal user with this phone."""
    rows = session.execute(text("SELECT portal_user_id, group_id FROM meterhub_portal_lookup(:p)"), {"p": phone})
    return [(r.portal_user_id, r.group_id) for r in rows]


def throttle() -> LoginThrottle:
    """Failed portal sign-ins (password or code) per phone and per address."""
    cfg = current_app.config
    return LoginThrottle(get_redis(), cfg["LOGIN_MAX_FAILURES"], cfg["LOGIN_WINDOW_SECONDS"],
                         f"{cfg['REDIS_NAMESPACE']}:portal", engine=db.engine)


def send_throttle() -> LoginThrottle:
    """Sign-in codes asked for, per phone and per address (each request counts, known phone or not)."""
    cfg = current_app.config
    return LoginThrottle(get_redis(), cfg["LOGIN_MAX_FAILURES"], cfg["LOGIN_WINDOW_SECONDS"],
                         f"{cfg['REDIS_NAMESPACE']}:portal-send", engine=db.engine)


def _phone_hash(phone: str) -> str:
    return hashlib.sha256(phone.encode()).hexdigest()


def _code_key(phone: str) -> str:
    return redis_key("portal", "code", _phone_hash(phone))


def _digest(phone: str, code: str) -> str:
    return hmac.new(current_app.config["SECRET_KEY"].encode(), f"{phone}:{code}".encode(), hashlib.sha256).hexdigest()


def request_code(phone: str, ip: str) -> None:
    """Queue a sign-in code for ``phone``: the same checks, work and answer whether the phone belongs to a
    tenant or not (the job finds out, and sends only to known phones). RateLimited when asked too often."""
    limiter = send_throttle()
    limiter.check(phone, ip)
    client, gap = get_redis(), redis_key("portal", "code-asked", _phone_hash(phone))
    if not client.set(gap, 1, nx=True, ex=RESEND_AFTER):
        wait = max(int(client.ttl(gap)), 1)
        raise RateLimited(f"A code was just asked for this phone; ask again in {wait} seconds.", retry_after=wait)
    limiter.failed(phone, ip)
    from ..redis_conn import get_queue

    get_queue("default").enqueue("meterhub.jobs.run", SEND_CODE_JOB, phone=phone, ttl=CODE_TTL,
                                 description="portal sign-in code")


SEND_CODE_JOB = "meterhub.portal.auth:send_code_job"


def send_code_job(phone: str) -> bool:
    """rq job: a new code for ``phone`` sent through its group's SMS notifier when the phone is known."""
    from ..extensions import db

    groups = candidate_groups(db.session(), phone)
    if not groups:
        return False
    return deliver_code(db.session(), groups, phone, issue_code(phone))


def issue_code(phone: str) -> str:
    """A new 6-digit code for ``phone`` (replaces the previous one), stored as an HMAC for ``CODE_TTL``."""
    client, key = get_redis(), _code_key(phone)
    code = f"{secrets.randbelow(10**6):06d}"
    pipe = client.pipeline()
    pipe.delete(key)
    pipe.hset(key, mapping={"digest": _digest(phone, code), "attempts": 0})
    pipe.expire(key, CODE_TTL)
    pipe.execute()
    return code


def check_code(phone: str, code: str) -> bool:
    """Whether ``code`` is the live code of ``phone``; a code works once and for a few attempts only."""
    client, key = get_redis(), _code_key(phone)
    stored = client.hget(key, "digest")
    if stored is None:
        return False
    if client.hincrby(key, "attempts", 1) > CODE_ATTEMPTS:
        client.delete(key)
        return False
    if hmac.compare_digest(stored.decode(), _digest(phone, (code or "").strip())):
        client.delete(key)
        return True
    return False


def deliver_code(session: Session, group_ids: list[int], phone: str, code: str) -> bool:
    """Send the code by the SMS notifier of the first of ``group_ids`` that has one; False when none could."""
    from ..alarms import secrets as secret_store
    from ..alarms.models import NotifierConfig
    from ..alarms.notifiers import Message
    from ..alarms.registry import notifiers

    sms = notifiers().get("sms")
    body = f"meterhub: {code} is your sign-in code (valid {CODE_TTL // 60} minutes)."
    for group_id in group_ids:
        use_group(group_id, session)
        config = session.execute(select(NotifierConfig).where(NotifierConfig.group_id == group_id,
                                                              NotifierConfig.notifier == "sms",
                                                              NotifierConfig.enabled).limit(1)).scalar()
        if config is None or sms is None:
            continue
        try:
            sms.send(Message("meterhub", body), phone, dict(config.settings),
                     secret_store.reveal(config.secrets, f"{config.group_id}:{config.id}"))
            return True
        except Exception:
            log.exception("sending a sign-in code through SMS config %s failed", config.id)
    if dev_outbox(phone, body):
        return True
    log.warning("no SMS notifier could send a sign-in code to a phone ending %s", phone[-4:])
    return False


def dev_outbox(phone: str, body: str) -> bool:
    """Development only: append the SMS to the file ``DEV_SMS_OUTBOX`` names (``make run`` sets it), for a
    group without an SMS notifier. False when not configured (never configure it in production)."""
    path = current_app.config.get("DEV_SMS_OUTBOX")
    if not path:
        return False
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as out:
        out.write(f"{utcnow().isoformat(timespec='seconds')} to {phone}: {body}\n")
    log.info("sign-in code for a phone ending %s written to the development SMS outbox %s", phone[-4:], target)
    return True
