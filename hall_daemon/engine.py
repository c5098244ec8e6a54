"""The queue engine: commands in, events out.

Pure: no I/O, no clock (every command carries its time), no asyncio. A command is checked
against the state first; only then are its events emitted, and each event is applied to the
state as it is emitted, so the next decision of the same command sees it. Replaying stored
events through `apply` rebuilds the same state: recovery and the live hall share one path.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import date, datetime
from typing import Any

from . import commands as c
from . import events as ev
from .events import Event
from .forecast import Forecaster, queue_length_forecast
from .limits import appointment_window_problem, check, fold
from .model import Conflict, DomainError, HallSpec, Invalid, LimitReached, NotFound
from .policy import POLICIES, Policy
from .state import (
    CALLED,
    CANCELLED,
    CLOSED,
    DONE,
    NO_SHOW,
    OPEN,
    PAUSED,
    SERVING,
    SUSPENDED,
    WAITING,
    Appointment,
    Counter,
    HallState,
    Ticket,
)

DAY_STARTED = "hall.day_started"  # marks where a hall day begins in the log
_NUMBER = re.compile(r"^([A-Z]{1,2})(\d{3})$")


class Engine:
    def __init__(
        self,
        spec: HallSpec,
        policy: Policy | None = None,
        forecaster: Forecaster = queue_length_forecast,
        state: HallState | None = None,
    ) -> None:
        self.spec = spec
        self.state = state if state is not None else HallState(spec)
        self.policy = policy if policy is not None else POLICIES[spec.policy.name]
        self.forecaster = forecaster
        self._prefix_service = {s.prefix: s.code for s in spec.services}
        self._out: list[Event] = []
        self._handlers: dict[type, Callable[[Any], None]] = {
            c.TakeTicket: self._take,
            c.CheckIn: self._check_in,
            c.CallNext: self._call_next,
            c.CallNumber: self._call_number,
            c.Recall: self._recall,
            c.Serving: self._serving,
            c.Done: self._done,
            c.NoShow: self._no_show,
            c.Suspend: self._suspend,
            c.Resume: self._resume,
            c.Transfer: self._transfer,
            c.OpenCounter: self._open,
            c.PauseCounter: self._pause,
            c.TogglePause: self._toggle_pause,
            c.CloseCounter: self._close,
            c.Cancel: self._cancel,
            c.Rate: self._rate,
            c.UpsertAppointment: self._upsert_appointment,
            c.CancelAppointment: self._cancel_appointment,
            c.ReportDevice: self._report_device,
            c.MoveTicket: self._move,
            c.SetNotice: self._set_notice,
            c.RequestReprint: self._reprint,
            c.ReplayCall: self._replay,
            c.Tick: lambda cmd: None,
        }

    # -- the two entry points -----------------------------------------------------------
    def execute(self, cmd: c.Command) -> list[Event]:
        """Apply a command; return its events, already applied to the state.

        A command that cannot apply raises DomainError and changes nothing, except that a
        new hall day may have begun first: those events are on the error as `.events` and
        must be stored like any others.
        """
        check(cmd)
        self._out = []
        try:
            self._advance_day(cmd.at)
            self._handlers[type(cmd)](cmd)
        except DomainError as exc:
            exc.events = self._out
            raise
        return self._out

    def apply(self, event: Event) -> None:
        """Change the state as `event` says. Used live (via _emit) and on replay."""
        s, d, at = self.state, event.data, event.at
        s.version += 1
        kind = event.type
        if kind == ev.TICKET_ISSUED:
            self._apply_issued(d, at)
        elif kind == ev.TICKET_CALLED:
            t = s.tickets[d["number"]]
            if t.state == WAITING:
                s.dequeue(t)
            counter = s.counters[d["counter"]]
            t.state, t.counter, t.recalls, t.called_at = CALLED, counter.id, 0, at
            counter.current, counter.since = t.number, at
            counter.priority_streak = counter.priority_streak + 1 if t.urgent else 0
        elif kind == ev.TICKET_RECALLED:
            s.tickets[d["number"]].recalls += 1
        elif kind == ev.TICKET_SERVING:
            s.tickets[d["number"]].state = SERVING
        elif kind in (ev.TICKET_DONE, ev.TICKET_NO_SHOW):
            t = s.tickets[d["number"]]
            t.state, t.finished_at = (DONE if kind == ev.TICKET_DONE else NO_SHOW), at
            counter = s.counters[d["counter"]]
            counter.current, counter.since = None, at
            if kind == ev.TICKET_DONE:
                counter.last = t.number
        elif kind == ev.TICKET_SUSPENDED:
            t = s.tickets[d["number"]]
            t.state = SUSPENDED
            counter = s.counters[d["counter"]]
            counter.current, counter.since = None, at
            counter.suspended.append(t.number)
        elif kind == ev.TICKET_RESUMED:
            t = s.tickets[d["number"]]
            self._release_suspended(t)
            t.state = WAITING
            s.enqueue(t)
        elif kind == ev.TICKET_TRANSFERRED:
            t = s.tickets[d["number"]]
            if d["counter"] is None:  # an admin moved a waiting ticket: no counter finished it
                s.dequeue(t)
            else:
                counter = s.counters[d["counter"]]
                counter.current, counter.since, counter.last = None, at, t.number
            t.state, t.service, t.counter = WAITING, d["to"], None
            s.enqueue(t)
        elif kind == ev.TICKET_CANCELLED:
            t = s.tickets[d["number"]]
            if t.state == WAITING:
                s.dequeue(t)
            elif t.state == SUSPENDED:
                self._release_suspended(t)
            elif t.state in (CALLED, SERVING) and t.counter is not None:
                counter = s.counters[t.counter]
                counter.current, counter.since = None, at
            t.state, t.finished_at = CANCELLED, at
        elif kind == ev.TICKET_RATED:
            s.tickets[d["number"]].rated = True
        elif kind in (ev.COUNTER_OPENED, ev.COUNTER_PAUSED, ev.COUNTER_CLOSED):
            counter = s.counters[d["counter"]]
            counter.state = kind.split(".")[1].replace("opened", OPEN)
            counter.since = at
        elif kind in (ev.DEVICE_ONLINE, ev.DEVICE_OFFLINE, ev.DEVICE_FAULT):
            s.devices[d["device"]] = (kind.split(".")[1], d.get("detail", ""))
        elif kind == ev.APPOINTMENT_UPSERTED:
            self._apply_appointment(d, at)
        elif kind == ev.APPOINTMENT_CANCELLED:
            s.appointments.pop(d["code"], None)
        elif kind == ev.NOTICE_SET:
            s.notice = d["text"]
        elif kind in (ev.REPRINT_REQUESTED, ev.REPLAY_REQUESTED):
            pass  # requests to the outputs; the queues stay as they are
        elif kind == DAY_STARTED:
            day = date.fromisoformat(d["day"])
            s.start_day(day)
            # Appointments of days gone by can no longer be checked in; one checked in
            # yesterday was served or cancelled with yesterday's tickets.
            s.appointments = {
                k: a
                for k, a in s.appointments.items()
                if a.ticket is None and self.spec.business_day(a.end) >= day
            }
        else:
            raise ValueError(f"unknown event type {kind!r}")

    def _apply_appointment(self, d: dict[str, Any], at: datetime) -> None:
        """Execute refuses what mqtt.md does not allow; a log written before it did (a year
        9999 appointment, say) loses that appointment here instead of bricking the day reset."""
        start, end = datetime.fromisoformat(d["start"]), datetime.fromisoformat(d["end"])
        if appointment_window_problem(start, end, at) is not None:
            self.state.appointments.pop(d["code"], None)
            return
        self.state.appointments[d["code"]] = Appointment(d["code"], d["service"], start, end)

    def replay(self, events: Iterable[Event]) -> None:
        for e in events:
            self.apply(e)

    # -- emitting -----------------------------------------------------------------------
    def _emit(self, kind: str, at: datetime, /, **data: Any) -> None:
        e = Event(kind, at, data)
        self.apply(e)
        self._out.append(e)

    def _ticket_data(self, t: Ticket, counter: int | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"number": t.number, "service": t.service}
        if counter is not None:
            d["counter"] = counter
        if t.appointment is not None:
            d["appointment"] = t.appointment
        return d

    def _cancelled_data(self, t: Ticket, reason: str) -> dict[str, Any]:
        """A called ticket is cancelled at its counter; an appointment's ticket names it."""
        at_counter = t.counter if t.state in (CALLED, SERVING) else None
        return {**self._ticket_data(t, at_counter), "reason": reason}

    def _advance_day(self, at: datetime) -> None:
        """On a new day's first command, close yesterday: cancel what is left, close counters."""
        day = self.spec.business_day(at)
        s = self.state
        if s.day is not None and day <= s.day:
            return
        for t in list(s.tickets.values()):
            if not t.finished:
                self._emit(ev.TICKET_CANCELLED, at, **self._cancelled_data(t, "day_end"))
        for counter in s.counters.values():
            if counter.state != CLOSED:
                self._emit(ev.COUNTER_CLOSED, at, counter=counter.id)
        self._emit(DAY_STARTED, at, day=day.isoformat())

    # -- lookups that raise the domain's errors -------------------------------------------
    def _counter(self, counter_id: int) -> Counter:
        counter = self.state.counters.get(counter_id)
        if counter is None:
            raise NotFound(f"unknown counter {counter_id}", "unknown-counter")
        return counter

    def _service(self, code: str) -> str:
        if code not in self.state.services:
            raise NotFound(f"unknown service {code!r}", "unknown-service")
        return code

    def _current(self, counter: Counter) -> Ticket:
        if counter.current is None:
            raise Conflict(f"counter {counter.id} has no current ticket", "no-current-ticket")
        return self.state.tickets[counter.current]

    def _find_ticket(self, ref: str) -> Ticket:
        t = self.state.tickets.get(ref) or self.state.by_token.get(ref)
        if t is None:
            raise NotFound(f"unknown ticket {ref!r}", "unknown-ticket")
        return t

    def _release_suspended(self, t: Ticket) -> None:
        if t.counter is not None and t.number in self.state.counters[t.counter].suspended:
            self.state.counters[t.counter].suspended.remove(t.number)

    # -- tickets --------------------------------------------------------------------------
    def _apply_issued(self, d: dict[str, Any], at: datetime) -> None:
        s = self.state
        s.order += 1
        t = Ticket(
            number=d["number"],
            service=d["service"],
            token=d["token"],
            priority=d["priority"],
            channel=d["channel"],
            issued_at=at,
            order=s.order,
            appointment=d.get("appointment"),
        )
        s.tickets[t.number] = t
        s.by_token[t.token] = t
        s.enqueue(t)
        s.issued[t.service] = s.issued.get(t.service, 0) + 1
        prefix, digits = t.number[:-3], int(t.number[-3:])
        s.next_number[prefix] = max(s.next_number.get(prefix, 1), digits + 1)
        if t.appointment is not None and t.appointment in s.appointments:
            s.appointments[t.appointment].ticket = t.number

    def _issue(
        self,
        at: datetime,
        service: str,
        token: str,
        channel: str,
        priority: bool,
        number: str | None = None,
        appointment: str | None = None,
    ) -> None:
        s = self.state
        spec = s.services[service]
        if token in s.by_token:
            raise Conflict("ticket token already in use", "duplicate-token")
        if number is None:
            n = s.next_number.get(spec.prefix, 1)
            if n > 999:
                raise LimitReached(f"service {service} has used all numbers today")
            number = f"{spec.prefix}{n:03d}"
        elif number in s.tickets:
            raise Conflict(f"ticket {number} was already issued today", "duplicate-number")
        urgent = priority or appointment is not None
        ahead = s.ahead_if_issued(service, urgent)
        data: dict[str, Any] = {
            "number": number,
            "service": service,
            "priority": priority,
            "channel": channel,
            "ahead": ahead,
            "forecast": self.forecaster(s, service, ahead, at),
            "token": token,
        }
        if appointment is not None:
            data["appointment"] = appointment
        self._emit(ev.TICKET_ISSUED, at, **data)

    def _take(self, cmd: c.TakeTicket) -> None:
        service = self._service(cmd.service)
        spec = self.state.services[service]
        if not spec.is_open(cmd.at.astimezone(self.spec.tz())):
            raise Conflict(f"service {service} is closed now", "service-closed")
        if self.state.issued.get(service, 0) >= spec.daily_limit:
            raise LimitReached(f"service {service} reached its daily limit of {spec.daily_limit}")
        if cmd.number is not None:
            m = _NUMBER.match(cmd.number)
            if m is None or m.group(1) != spec.prefix or m.group(2) == "000":
                raise Invalid(
                    f"ticket number {cmd.number!r} is not {spec.prefix}001..999", "bad-number"
                )
        self._issue(cmd.at, service, cmd.token, cmd.channel, cmd.priority, cmd.number)

    def _check_in(self, cmd: c.CheckIn) -> None:
        a = self.state.appointments.get(cmd.code)
        if a is None:
            raise NotFound(f"unknown appointment code {cmd.code!r}", "unknown-code")
        if a.ticket is not None:
            raise Conflict(f"appointment already checked in as {a.ticket}", "already-checked-in")
        if (a.start - cmd.at).total_seconds() > self.spec.policy.checkin_early_s:
            raise Conflict("too early for this appointment", "too-early")
        if cmd.at > a.end:
            raise Conflict("this appointment has ended", "expired")
        # Appointments are capacity the hall already granted: no daily limit, no opening hours.
        self._issue(cmd.at, a.service, cmd.token, "appointment", False, appointment=a.code)

    def _cancel(self, cmd: c.Cancel) -> None:
        t = self._find_ticket(cmd.ticket)
        if t.finished:
            raise Conflict(f"ticket {t.number} is already {t.state}", "already-finished")
        self._emit(ev.TICKET_CANCELLED, cmd.at, **self._cancelled_data(t, cmd.reason))

    # -- counters calling -----------------------------------------------------------------
    def _take_floor(self, counter: Counter, at: datetime) -> None:
        """Before calling someone: open the counter if needed and finish its current ticket."""
        if counter.state != OPEN:
            self._emit(ev.COUNTER_OPENED, at, counter=counter.id, services=list(counter.services))
        if counter.current is not None:
            t = self.state.tickets[counter.current]
            self._emit(ev.TICKET_DONE, at, **self._ticket_data(t, counter.id))

    def _call(self, counter: Counter, t: Ticket, at: datetime) -> None:
        if t.state == SUSPENDED:
            self._emit(ev.TICKET_RESUMED, at, **self._ticket_data(t, counter.id))
        self._emit(ev.TICKET_CALLED, at, **self._ticket_data(t, counter.id))

    def _call_next(self, cmd: c.CallNext) -> None:
        counter = self._counter(cmd.counter)
        self._take_floor(counter, cmd.at)
        t = self.policy(self.state, counter, cmd.at)
        if t is not None:
            self._call(counter, t, cmd.at)

    def _call_number(self, cmd: c.CallNumber) -> None:
        counter = self._counter(cmd.counter)
        t = self._callable_by_number(counter, cmd.number.strip().upper())
        self._take_floor(counter, cmd.at)
        self._call(counter, t, cmd.at)

    def _callable_by_number(self, counter: Counter, ref: str) -> Ticket:
        """The keypad's CALL: the first of the counter's services with that number waiting."""
        s = self.state
        if ref.isdigit():
            if not 1 <= int(ref) <= 999:
                raise Invalid(f"ticket number {ref!r} out of range", "bad-number")
            wanted = int(ref)
            by_service: dict[str, Ticket] = {}
            for t in s.tickets.values():
                if t.state in (WAITING, SUSPENDED) and int(t.number[-3:]) == wanted:
                    by_service.setdefault(t.service, t)
            for service in counter.services:
                if service in by_service:
                    return by_service[service]
        else:
            found = s.tickets.get(ref)
            if found and found.state in (WAITING, SUSPENDED) and found.service in counter.services:
                return found
        raise NotFound(f"no ticket {ref} waiting for counter {counter.id}", "unknown-ticket")

    def _recall(self, cmd: c.Recall) -> None:
        counter = self._counter(cmd.counter)
        t = self._current(counter)
        limit = self.spec.policy.no_show_after_recalls
        if limit and t.recalls >= limit and t.state == CALLED:
            self._emit(ev.TICKET_NO_SHOW, cmd.at, **self._ticket_data(t, counter.id))
        else:
            self._emit(ev.TICKET_RECALLED, cmd.at, **self._ticket_data(t, counter.id))

    def _serving(self, cmd: c.Serving) -> None:
        counter = self._counter(cmd.counter)
        t = self._current(counter)
        if t.state == CALLED:
            self._emit(ev.TICKET_SERVING, cmd.at, **self._ticket_data(t, counter.id))

    def _done(self, cmd: c.Done) -> None:
        counter = self._counter(cmd.counter)
        t = self._current(counter)
        self._emit(ev.TICKET_DONE, cmd.at, **self._ticket_data(t, counter.id))

    def _no_show(self, cmd: c.NoShow) -> None:
        counter = self._counter(cmd.counter)
        t = self._current(counter)
        if t.state == SERVING:
            raise Conflict(f"ticket {t.number} arrived at the counter", "applicant-arrived")
        self._emit(ev.TICKET_NO_SHOW, cmd.at, **self._ticket_data(t, counter.id))

    def _suspend(self, cmd: c.Suspend) -> None:
        counter = self._counter(cmd.counter)
        t = self._current(counter)
        self._emit(ev.TICKET_SUSPENDED, cmd.at, **self._ticket_data(t, counter.id))

    def _resume(self, cmd: c.Resume) -> None:
        counter = self._counter(cmd.counter)
        if not counter.suspended:
            raise Conflict(f"counter {counter.id} has no suspended ticket", "none-suspended")
        t = self.state.tickets[counter.suspended[0]]
        self._take_floor(counter, cmd.at)
        self._call(counter, t, cmd.at)

    def _transfer(self, cmd: c.Transfer) -> None:
        counter = self._counter(cmd.counter)
        t = self._current(counter)
        to = self._service(cmd.service)
        if to == t.service:
            raise Conflict(f"ticket {t.number} is already in service {to}", "same-service")
        data: dict[str, Any] = {
            "number": t.number,
            "from": t.service,
            "to": to,
            "counter": counter.id,
        }
        if t.appointment is not None:
            data["appointment"] = t.appointment
        self._emit(ev.TICKET_TRANSFERRED, cmd.at, **data)

    def _rate(self, cmd: c.Rate) -> None:
        counter = self._counter(cmd.counter)
        if counter.last is None:
            raise Conflict(f"counter {counter.id} has served nobody to rate", "nothing-to-rate")
        t = self.state.tickets[counter.last]
        if t.rated:
            raise Conflict(f"ticket {t.number} was already rated", "already-rated")
        self._emit(ev.TICKET_RATED, cmd.at, **self._ticket_data(t, counter.id), score=cmd.score)

    # -- counters' state ------------------------------------------------------------------
    def _open(self, cmd: c.OpenCounter) -> None:
        counter = self._counter(cmd.counter)
        if counter.state != OPEN:
            self._emit(
                ev.COUNTER_OPENED, cmd.at, counter=counter.id, services=list(counter.services)
            )

    def _pause(self, cmd: c.PauseCounter) -> None:
        counter = self._counter(cmd.counter)
        if counter.state == CLOSED:
            raise Conflict(f"counter {counter.id} is closed", "counter-closed")
        if counter.state != PAUSED:
            self._emit(ev.COUNTER_PAUSED, cmd.at, counter=counter.id)

    def _toggle_pause(self, cmd: c.TogglePause) -> None:
        counter = self._counter(cmd.counter)
        if counter.state == OPEN:
            self._emit(ev.COUNTER_PAUSED, cmd.at, counter=counter.id)
        else:
            self._emit(
                ev.COUNTER_OPENED, cmd.at, counter=counter.id, services=list(counter.services)
            )

    def _close(self, cmd: c.CloseCounter) -> None:
        counter = self._counter(cmd.counter)
        if counter.state == CLOSED:
            return
        if counter.current is not None:
            t = self.state.tickets[counter.current]
            self._emit(ev.TICKET_DONE, cmd.at, **self._ticket_data(t, counter.id))
        self._emit(ev.COUNTER_CLOSED, cmd.at, counter=counter.id)

    # -- appointments and devices ---------------------------------------------------------
    def _upsert_appointment(self, cmd: c.UpsertAppointment) -> None:
        service = self._service(cmd.service)  # the times and code: limits.check
        existing = self.state.appointments.get(cmd.code)
        if existing is not None and existing.ticket is not None:
            raise Conflict(
                f"appointment already checked in as {existing.ticket}", "already-checked-in"
            )
        self._emit(
            ev.APPOINTMENT_UPSERTED,
            cmd.at,
            code=cmd.code,
            service=service,
            start=cmd.start.isoformat(),
            end=cmd.end.isoformat(),
        )

    def _cancel_appointment(self, cmd: c.CancelAppointment) -> None:
        if cmd.code not in self.state.appointments:
            raise NotFound(f"unknown appointment code {cmd.code!r}", "unknown-code")
        self._emit(ev.APPOINTMENT_CANCELLED, cmd.at, code=cmd.code)

    def _report_device(self, cmd: c.ReportDevice) -> None:
        if cmd.state not in ("online", "offline", "fault"):
            raise Invalid(f"unknown device state {cmd.state!r}", "bad-state")
        if self.state.devices.get(cmd.device) == (cmd.state, cmd.detail):
            return  # once per change, not once per retry
        self._emit(
            f"device.{cmd.state}",
            cmd.at,
            device=cmd.device,
            port=cmd.port,
            kind=cmd.kind,
            detail=cmd.detail,
        )

    # -- admin actions --------------------------------------------------------------------
    def _move(self, cmd: c.MoveTicket) -> None:
        # An admin's decision: neither the target's opening hours nor its daily limit apply.
        t = self._find_ticket(cmd.ticket)
        to = self._service(cmd.service)
        if t.state != WAITING:
            raise Conflict(f"ticket {t.number} is {t.state}, not waiting", "not-waiting")
        if to == t.service:
            raise Conflict(f"ticket {t.number} is already in service {to}", "same-service")
        data: dict[str, Any] = {"number": t.number, "from": t.service, "to": to, "counter": None}
        if t.appointment is not None:
            data["appointment"] = t.appointment
        self._emit(ev.TICKET_TRANSFERRED, cmd.at, **data)

    def _set_notice(self, cmd: c.SetNotice) -> None:
        text = fold(cmd.text)  # the limits checked it folded
        if text != self.state.notice:
            self._emit(ev.NOTICE_SET, cmd.at, text=text)

    def _reprint(self, cmd: c.RequestReprint) -> None:
        t = self._find_ticket(cmd.ticket)
        if t.finished:
            raise Conflict(f"ticket {t.number} is already {t.state}", "already-finished")
        self._emit(ev.REPRINT_REQUESTED, cmd.at, number=t.number, service=t.service)

    def _replay(self, cmd: c.ReplayCall) -> None:
        if cmd.counter is not None:
            t = self._current(self._counter(cmd.counter))
        elif cmd.ticket is not None:
            t = self._find_ticket(cmd.ticket)
        else:
            raise Invalid("name a ticket or a counter to announce again", "bad-request")
        if t.state not in (CALLED, SERVING) or t.counter is None:
            raise Conflict(f"ticket {t.number} is not at a counter", "not-called")
        self._emit(
            ev.REPLAY_REQUESTED, cmd.at, number=t.number, service=t.service, counter=t.counter
        )
