"""Queue many answered responses at once, for the two-worker test and the drain benchmark."""

from datetime import UTC, datetime

from fhir_mappings.bundle import ResponseContext, build_transaction
from fhir_mappings.instrument import load_bundled
from fhir_mappings.scoring import score, validate_answers
from plugin.core.models import EhrWrite, Invitation, Practice, SessionEvent

INSTRUMENT = load_bundled()
# Every choice answered with its highest option.
FULL = {item.link_id: item.options[-1].code for item in INSTRUMENT.choice_items}


def queue_writes(session, practice: Practice, vault, count: int) -> None:
    """Queue `count` answered responses for practice, as the survey page would; one commit."""
    answers, _ = validate_answers(INSTRUMENT, FULL)
    scores = score(INSTRUMENT, answers)
    now = datetime.now(UTC)
    for n in range(count):
        _add_answered(session, practice, vault, n, answers, scores, now, encounter=None)
    session.commit()


def queue_session(session, practice: Practice, vault, n: int, form: dict, ended_at) -> EhrWrite:
    """Queue the answered response of client c1's session n, ended at ended_at, as the survey
    page would after the client submitted `form` (link id -> option code or comment text)."""
    answers, errors = validate_answers(INSTRUMENT, form)
    assert errors == {}
    scores = score(INSTRUMENT, answers)
    write = _add_answered(
        session, practice, vault, n, answers, scores, ended_at, encounter=f"Encounter/e{n}"
    )
    session.commit()
    return write


def _add_answered(
    session, practice: Practice, vault, n: int, answers, scores, ended_at, encounter
) -> EhrWrite:
    """Add client c1's session n, its answered invitation and its queued EhrWrite."""
    event = SessionEvent(
        practice_id=practice.id,
        platform="standard",
        event_id=f"e-{n}",
        session_id=f"s-{n}",
        started_at=ended_at,
        ended_at=ended_at,
        patient_ref="Patient/c1",
        practitioner_ref="Practitioner/p1",
        status="planned",
        next_attempt_at=ended_at,
        received_at=ended_at,
    )
    invitation = Invitation(
        practice_id=practice.id,
        session_event=event,
        status="answered",
        questionnaire=INSTRUMENT.canonical,
        language="en",
        due_at=ended_at,
        next_attempt_at=ended_at,
        created_at=ended_at,
    )
    session.add_all([event, invitation])
    session.flush()
    bundle = build_transaction(
        INSTRUMENT,
        answers,
        scores,
        ResponseContext(
            response_id=invitation.id,
            identifier_system="https://example.org/sid/r",
            patient="Patient/c1",
            practitioner=None,
            encounter=encounter,
            authored=ended_at,
            session_ended_at=ended_at,
        ),
    )
    write = EhrWrite(
        practice_id=practice.id,
        invitation_id=invitation.id,
        bundle=vault.seal(bundle),
        next_attempt_at=ended_at,
        created_at=ended_at,
    )
    session.add(write)
    return write


def every_item(code: str, **extra: str) -> dict:
    """Return a form answering every choice item with the option `code`, plus extra answers."""
    return {item.link_id: code for item in INSTRUMENT.choice_items} | extra
