"""The alert ledger (collection ``alert_state``): per subject, the state last announced and its delivery per channel.

One document per subject (``_id``): ``raw_file:<id>``, ``disk:instrument:<id>``,
``disk:backup``, ``digest:<YYYY-MM-DD>``, ``summary:<...>`` (one message for
many changes) and ``ledger:baseline`` (written by the first check ever).

Every change of state is a compare-and-set on ``version`` (or an insert for a
new subject), so of two checks that see the same change only one records it
and sends it. Each delivery is claimed per channel with a lease before it is
sent, so two checks never send the same message to the same channel; a
delivery that failed stays ``pending`` and is tried again by the next check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypedDict, Unpack

from mongoengine import DateTimeField, DictField, Document, IntField, ListField, StringField
from mongoengine.errors import NotUniqueError

from shared.db.interface import connect_db
from shared.db.keyset import prefix_range
from shared.db.models import utc_now

OK_STATE = "ok"  # the state of a subject that is healthy again (a recovery was announced)
BASELINE_SUBJECT = "ledger:baseline"
_ID_CHUNK = 500


class DeliveryStatus(StrEnum):
    """Where one message is with one channel."""

    PENDING = "pending"  # to send (again: the last try failed)
    SENDING = "sending"  # claimed by a check until lease_until
    SENT = "sent"
    GROUPED = "grouped"  # announced as part of a summary message
    SKIPPED = "skipped"  # nothing to say on this channel (a recovery of something it was never told)
    EXPIRED = "expired"  # given up: the channel was down for the whole retry window, or is no longer configured


DELIVERED = frozenset({DeliveryStatus.SENT, DeliveryStatus.GROUPED, DeliveryStatus.SENDING})


class AlertRecord(Document):
    """The state last announced for one subject, and how its message went out on each channel."""

    id = StringField(primary_key=True)  # the subject
    kind = StringField()  # what kind of event the state is (failed_backup, deadline, low_free_space, ...)
    state = StringField(required=True)
    version = IntField(required=True, default=1)  # +1 per change of state: the compare-and-set key
    changed_at = DateTimeField(required=True)
    last_bad_state = StringField()  # the last state other than ok, and when it began (for the digest)
    last_bad_at = DateTimeField()
    message = DictField()  # what was (or is being) sent for the current state
    # channel -> {status, attempts, last_error, sent_at, owner, lease_until}; replaced at each change of state,
    # so a message still pending when its subject changes again is dropped for the newer one.
    deliveries = DictField()
    pending_channels = ListField(StringField())  # channels still to send the message to
    db_created_at = DateTimeField(default=utc_now)

    meta = {
        "collection": "alert_state",
        # state: the open (not ok) records; pending_channels: what is still to send; last_bad_at: the digest's
        # new problems. Subjects (the _id) are read by prefix ranges of the _id index.
        "indexes": ["state", "pending_channels", "-last_bad_at"],
        "strict": False,
    }


# Indexes earlier versions created that no query uses any more (dropped by shared.db.interface.connect_db).
LEGACY_ALERT_INDEXES = ("changed_at_-1",)


def fresh_delivery(status: DeliveryStatus = DeliveryStatus.PENDING, **extra: Any) -> dict[str, Any]:
    """A channel's delivery record at the start of a new state."""
    return {"status": status.value, "attempts": 0, "last_error": None, "sent_at": None, **extra}


def _pending(deliveries: Mapping[str, Mapping[str, Any]]) -> list[str]:
    return sorted(channel for channel, item in deliveries.items() if item.get("status") == DeliveryStatus.PENDING)


def _collection() -> Any:
    connect_db()
    return AlertRecord._get_collection()


def open_alert_records(prefixes: Iterable[str]) -> dict[str, AlertRecord]:
    """Subjects starting with one of ``prefixes`` whose last announced state is not ok, by subject.

    "Not ok" as the two ranges of the ``state`` index around ``ok``: recovered
    records pile up for ever, open ones are few.
    """
    connect_db()
    found: dict[str, AlertRecord] = {}
    for prefix in prefixes:
        for state in ({"$lt": OK_STATE}, {"$gt": OK_STATE}):
            query = {"state": state, "_id": prefix_range(prefix)}
            found.update((record.id, record) for record in AlertRecord.objects(__raw__=query))
    return found


def alert_records(subjects: Iterable[str]) -> dict[str, AlertRecord]:
    """The ledger records of these subjects that exist, by subject."""
    connect_db()
    subjects = list(subjects)
    found: dict[str, AlertRecord] = {}
    for start in range(0, len(subjects), _ID_CHUNK):
        found.update({record.id: record for record in AlertRecord.objects(id__in=subjects[start : start + _ID_CHUNK])})
    return found


def last_alerts(subjects: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The last announced state of each of these subjects that has one (for the Backups page), by subject.

    Only the state, its kind, when it began, the last bad state and the
    message's title are read, in batches of the given ids.
    """
    connect_db()
    subjects = list(subjects)
    found: dict[str, dict[str, Any]] = {}
    fields = ("id", "state", "kind", "changed_at", "last_bad_state", "last_bad_at", "message.title")
    for start in range(0, len(subjects), _ID_CHUNK):
        chunk = AlertRecord.objects(id__in=subjects[start : start + _ID_CHUNK]).only(*fields)
        for record in chunk:
            found[record.id] = {
                "state": record.state,
                "kind": record.kind,
                "changed_at": record.changed_at,
                "last_bad_state": record.last_bad_state,
                "last_bad_at": record.last_bad_at,
                "title": (record.message or {}).get("title"),
            }
    return found


class NewAlertState(TypedDict):
    """What a change of a subject's state writes: the state, its kind, and its message with one delivery per channel."""

    state: str
    kind: str
    message: dict[str, Any]
    deliveries: dict[str, dict[str, Any]]


def _state_fields(change: NewAlertState, version: int, now: datetime) -> dict[str, Any]:
    """The fields of ``change`` at ``version``; ``last_bad_*`` only for a bad state (a recovery keeps the old)."""
    fields: dict[str, Any] = {
        **change,
        "version": version,
        "changed_at": now,
        "pending_channels": _pending(change["deliveries"]),
    }
    if change["state"] != OK_STATE:
        fields.update(last_bad_state=change["state"], last_bad_at=now)
    return fields


def record_new_alert(subject: str, *, now: datetime | None = None, **change: Unpack[NewAlertState]) -> bool:
    """Insert the first record of ``subject``; False when another check inserted it first."""
    connect_db()
    record = AlertRecord(id=subject, **_state_fields(change, 1, now or utc_now()))
    try:
        record.save(force_insert=True)
    except NotUniqueError:
        return False
    return True


def record_state_change(
    subject: str, *, expected_version: int, now: datetime | None = None, **change: Unpack[NewAlertState]
) -> bool:
    """Move ``subject`` to ``change["state"]`` only if it is still at ``expected_version`` (compare-and-set).

    Returns whether this call made the change; False means another check
    changed the subject since it was read, and that check announces it.
    """
    fields = _state_fields(change, expected_version + 1, now or utc_now())
    result = _collection().update_one({"_id": subject, "version": expected_version}, {"$set": fields})
    return result.matched_count == 1


def claim_delivery(
    subject: str, version: int, channel: str, owner: str, *, lease: timedelta, now: datetime | None = None
) -> bool:
    """Take the right to send ``subject``'s message (of ``version``) to ``channel`` for ``lease``.

    Succeeds for a pending delivery, or one whose sender's lease ran out
    (that sender died mid-send: the message may then go out twice, but it is never lost).
    """
    now = now or utc_now()
    key = f"deliveries.{channel}"
    query = {
        "_id": subject,
        "version": version,
        "$or": [
            {f"{key}.status": DeliveryStatus.PENDING.value},
            {f"{key}.status": DeliveryStatus.SENDING.value, f"{key}.lease_until": {"$lte": now}},
        ],
    }
    update = {
        "$set": {
            f"{key}.status": DeliveryStatus.SENDING.value,
            f"{key}.owner": owner,
            f"{key}.lease_until": now + lease,
        },
        "$inc": {f"{key}.attempts": 1},
    }
    return _collection().update_one(query, update).matched_count == 1


def finish_delivery(
    subject: str,
    version: int,
    channel: str,
    owner: str,
    *,
    status: DeliveryStatus,
    error: str | None = None,
    now: datetime | None = None,
) -> bool:
    """Record how a claimed delivery ended: sent, pending again (with the error) or expired."""
    now = now or utc_now()
    key = f"deliveries.{channel}"
    fields: dict[str, Any] = {f"{key}.status": status.value, f"{key}.owner": None, f"{key}.lease_until": None}
    fields[f"{key}.last_error"] = error
    if status == DeliveryStatus.SENT:
        fields[f"{key}.sent_at"] = now
    update: dict[str, Any] = {"$set": fields}
    if status != DeliveryStatus.PENDING:
        update["$pull"] = {"pending_channels": channel}
    query = {"_id": subject, "version": version, f"{key}.owner": owner}
    return _collection().update_one(query, update).matched_count == 1


def expire_delivery(subject: str, version: int, channel: str, reason: str) -> bool:
    """Give up a pending delivery (channel removed from the settings, retry window over)."""
    key = f"deliveries.{channel}"
    query = {"_id": subject, "version": version, f"{key}.status": DeliveryStatus.PENDING.value}
    update = {
        "$set": {f"{key}.status": DeliveryStatus.EXPIRED.value, f"{key}.last_error": reason},
        "$pull": {"pending_channels": channel},
    }
    return _collection().update_one(query, update).matched_count == 1


def records_with_pending_deliveries(limit: int = 1000) -> list[AlertRecord]:
    """Records with a message still to send on some channel, oldest change first.

    A channel name in ``pending_channels`` (any string > "") through its index;
    they are few (a delivery expires after its retry window), so sorted here.
    """
    connect_db()
    pending = AlertRecord.objects(__raw__={"pending_channels": {"$gt": ""}})
    return sorted(pending, key=lambda record: (record.changed_at, record.id))[:limit]


def set_message(subject: str, version: int, message: dict[str, Any]) -> bool:
    """Replace the message of a record not yet sent anywhere (a summary whose list changed before sending)."""
    result = _collection().update_one({"_id": subject, "version": version}, {"$set": {"message": message}})
    return result.matched_count == 1


def latest_record(prefix: str) -> AlertRecord | None:
    """The record with the greatest subject starting with ``prefix``: for ``digest:<YYYY-MM-DD>``, the last digest."""
    connect_db()
    return AlertRecord.objects(__raw__={"_id": prefix_range(prefix)}).order_by("-id").first()


def records_gone_bad_since(since: datetime, prefix: str) -> list[AlertRecord]:
    """Records under ``prefix`` that entered a bad state at or after ``since`` (recovered since or not)."""
    connect_db()
    return list(
        AlertRecord.objects(__raw__={"_id": prefix_range(prefix)}, last_bad_at__gte=since).order_by("last_bad_at")
    )


__all__ = [
    "BASELINE_SUBJECT",
    "DELIVERED",
    "OK_STATE",
    "AlertRecord",
    "DeliveryStatus",
    "alert_records",
    "claim_delivery",
    "expire_delivery",
    "finish_delivery",
    "fresh_delivery",
    "last_alerts",
    "latest_record",
    "open_alert_records",
    "record_new_alert",
    "record_state_change",
    "records_gone_bad_since",
    "records_with_pending_deliveries",
    "set_message",
]
