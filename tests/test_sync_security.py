"""The MQTT sync with a broker that wants credentials and an ACL, and over TLS with a
certificate authority made for the test (server and client certificates)."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from hall_daemon import commands as c
from tests.mqtt_broker import (
    Broker,
    Contract,
    Recorder,
    command,
    make_ca,
    mqtt_config,
    recording,
    running,
    until,
)

pytest_plugins = ["tests.mqtt_broker"]
pytestmark = pytest.mark.service

BASE = "hall/demo-hall"
CONTRACT = Contract()

ACL = """\
user demo-hall
topic readwrite hall/demo-hall/#

user backend
topic read hall/+/#
topic write hall/+/cmd/+

user other-hall
topic readwrite hall/other-hall/#
"""


def passwords(path: Path, users: dict[str, str]) -> None:
    for i, (user, password) in enumerate(users.items()):
        create = ["-c"] if i == 0 else []
        subprocess.run(
            ["mosquitto_passwd", "-b", *create, str(path), user, password],
            check=True,
            capture_output=True,
            timeout=30,
        )


async def test_password_file_and_acl(
    broker_factory: Callable[..., Broker], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    d = tmp_path / "auth"
    d.mkdir()
    passwords(
        d / "passwd", {"demo-hall": "s3cret hall", "backend": "b4ckend", "other-hall": "0ther"}
    )
    (d / "acl").write_text(ACL)
    broker = broker_factory(
        "auth", conf=f"allow_anonymous false\npassword_file {d / 'passwd'}\nacl_file {d / 'acl'}"
    )
    (d / "hall-password").write_text("s3cret hall\n")  # as an editor leaves it: with a newline
    good = mqtt_config(broker.port, username="demo-hall", password_file=d / "hall-password")

    with recording(broker.port, [f"{BASE}/#"], username="backend", password="b4ckend") as rec:
        async with running(tmp_path / "hall.db", good) as (hall, sync):
            await rec.until(lambda r: r.status() == "online", what="online")
            await hall.submit(c.TakeTicket(hall.now(), "A", "t" * 22))
            reply = await command(rec, "ticket.remote", {"v": 1, "id": "auth-1", "service": "B"})
            assert reply["ok"]
            await until(lambda: sync.stats()["outbox_depth"] == 0)
            await rec.until(lambda r: len(r.events(f"{BASE}/events")) == hall.store.last_seq())
        CONTRACT.check_all(rec.snapshot())

    # Nobody gets in without credentials, or with wrong ones.
    anonymous = Recorder(broker.port, [f"{BASE}/#"]).start(wait=False)
    monkeypatch.setenv("HALL_TEST_MQTT_PASSWORD", "wrong")
    wrong = mqtt_config(broker.port, username="demo-hall", password_env="HALL_TEST_MQTT_PASSWORD")
    async with running(tmp_path / "wrong.db", wrong) as (hall, sync):
        await until(lambda: "refused" in sync.stats()["last_error"], what="the refusal")
        assert not sync.stats()["connected"]
        assert sync.stats()["outbox_depth"] >= 1  # kept for when the password is fixed
    await until(lambda: anonymous.refused >= 1, what="anonymous refused")
    anonymous.close()

    # A hall whose account may not publish under its base never says online and never
    # counts an event as delivered.
    monkeypatch.setenv("HALL_TEST_MQTT_PASSWORD", "0ther")
    other = mqtt_config(broker.port, username="other-hall", password_env="HALL_TEST_MQTT_PASSWORD")
    with recording(broker.port, [f"{BASE}/status"], username="backend", password="b4ckend") as rec:
        async with running(tmp_path / "other.db", other) as (hall, sync):
            await until(lambda: "authori" in sync.stats()["last_error"].lower(), what="denied")
            assert not sync.stats()["connected"] and sync.stats()["outbox_depth"] >= 1
        assert rec.status() != "online" or rec.last_json(f"{BASE}/status")["boot"] != 1


async def test_tls_with_a_private_certificate_authority_and_client_certificates(
    broker_factory: Callable[..., Broker], tmp_path: Path
) -> None:
    pki = make_ca(tmp_path / "pki")
    broker = broker_factory(
        "tls",
        conf="\n".join(
            [
                f"cafile {pki['ca.pem']}",
                f"certfile {pki['server.pem']}",
                f"keyfile {pki['server.key']}",
                "require_certificate true",
            ]
        ),
    )
    client_tls = {"ca": pki["ca.pem"], "cert": pki["client.pem"], "key": pki["client.key"]}
    config = mqtt_config(broker.port, tls=client_tls)
    recorder_tls = {
        "ca_certs": str(pki["ca.pem"]),
        "certfile": str(pki["client.pem"]),
        "keyfile": str(pki["client.key"]),
    }
    with recording(broker.port, [f"{BASE}/#"], tls=recorder_tls) as rec:
        async with running(tmp_path / "hall.db", config) as (hall, sync):
            await rec.until(lambda r: r.status() == "online", what="online over TLS")
            reply = await command(rec, "ticket.remote", {"v": 1, "id": "tls-1", "service": "C"})
            assert reply["ok"] and reply["data"]["number"] == "C001"
            await rec.until(lambda r: len(r.events(f"{BASE}/events")) == hall.store.last_seq())
            assert sync.stats()["connected"]
        CONTRACT.check_all(rec.snapshot())

    # The broker's certificate must chain to the configured CA (here: the system's CAs).
    untrusted = mqtt_config(broker.port, tls={"cert": pki["client.pem"], "key": pki["client.key"]})
    async with running(tmp_path / "untrusted.db", untrusted) as (_, sync):
        await until(lambda: "CERTIFICATE_VERIFY_FAILED" in sync.stats()["last_error"])
        assert not sync.stats()["connected"]
    # And the broker wants ours.
    anonymous_tls = mqtt_config(broker.port, tls={"ca": pki["ca.pem"]})
    async with running(tmp_path / "nocert.db", anonymous_tls) as (_, sync):
        await until(lambda: sync.stats()["last_error"] != "", what="a refused handshake")
        assert not sync.stats()["connected"]
