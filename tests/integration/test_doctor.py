"""`rotators doctor` against real PostgreSQL and MariaDB servers and the local Secrets Manager: each
failure it names, its diagnosis, and that --fix leaves a secret whose AWSCURRENT logs in. The leak
check watches every value stored and every password set by hand, in all it prints."""

from __future__ import annotations

import io
import json
import re
import socket
import uuid
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from rotators.cli import doctor as doctor_module
from rotators.cli import main
from rotators.secrets import AWSCURRENT
from rotators.testing.secretsmanager import REGION
from tests.conftest import Watched
from tests.engines import MYSQL, POSTGRESQL, Database, Engine, engines

ON_BOTH = pytest.mark.parametrize("engine", engines(among=(POSTGRESQL, MYSQL)))
STALE = ("--stale-after", "0")  # every AWSPENDING of these tests is seconds old: treat it as stuck


class CloudTrail:
    """CloudTrail as the doctor sees it: a real client with stubbed answers (moto has no
    LookupEvents). Access is denied unless a test records events."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] | None = None

    def record(self, name: str, secret_arn: str, error: str = "") -> None:
        detail = {"eventName": name, "additionalEventData": {"SecretId": secret_arn}}
        if error:
            detail["errorMessage"] = error
        event = {
            "EventId": str(uuid.uuid4()),
            "EventName": name,
            "EventTime": datetime.now(UTC),
            "EventSource": "secretsmanager.amazonaws.com",
            "CloudTrailEvent": json.dumps(detail),
        }
        self.events = [*(self.events or []), event]

    def client(self) -> Any:
        client = boto3.client(
            "cloudtrail", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
        )
        stubber = Stubber(client)
        if self.events is None:
            stubber.add_client_error("lookup_events", "AccessDeniedException", http_status_code=400)
        else:
            for name in doctor_module.ROTATION_EVENTS:
                mine = [e for e in self.events if e["EventName"] == name]
                stubber.add_response("lookup_events", {"Events": mine})
        stubber.activate()
        return client


@pytest.fixture(autouse=True)
def cloudtrail(monkeypatch: pytest.MonkeyPatch) -> CloudTrail:
    trail = CloudTrail()
    monkeypatch.setattr(doctor_module, "cloudtrail_client", trail.client)
    return trail


def doctor(leak_check: Watched, *args: str) -> tuple[int, dict[str, Any]]:
    """Run the command as a script would (--json): its exit code and report."""
    leak_check.read_output()  # what the rotations printed before (metrics): not the report
    code = main(["doctor", *args, "--json"])
    report: dict[str, Any] = json.loads(leak_check.read_output())
    assert code == doctor_module.EXIT_CODES[report["status"]], "the exit code tells the status"
    return code, report


def advice(report: dict[str, Any]) -> str:
    return " ".join(finding["advice"] for finding in report["findings"])


def versions(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["version_id"]: row for row in report["versions"]}


@ON_BOTH
def test_a_rotated_secret_is_healthy_and_cloudtrail_tells_the_last_attempt(
    db: Database, leak_check: Watched, cloudtrail: CloudTrail
) -> None:
    arn = db.store(db.add_user())
    db.rotate(arn)
    cloudtrail.record("RotationFailed", arn, "Error when executing lambda during setSecret step")
    cloudtrail.record("RotationSucceeded", arn)
    cloudtrail.record("RotationFailed", "arn:aws:secretsmanager:us-east-1:123456789012:secret:other-AbCdEf")
    assert main(["doctor", arn]) == 0
    text = leak_check.read_output()
    assert "HEALTHY: AWSCURRENT logs in and no rotation is pending" in text
    assert f"rotation     on, function {db.sm.rotation_lambda_arn}, schedule every 30 days" in text
    assert re.search(r"AWSCURRENT +\S+ +\S+ \S+ UTC +logs in as '", text)
    assert re.search(r"AWSPREVIOUS +\S+ +\S+ \S+ UTC +refused: ", text), "the old password no longer works"
    assert "last attempt (CloudTrail) RotationSucceeded at " in text


@ON_BOTH
def test_a_stuck_pending_is_taken_off_after_asking_and_the_next_rotation_completes(
    db: Database, leak_check: Watched, monkeypatch: pytest.MonkeyPatch
) -> None:
    arn = db.store(db.add_user())
    token = db.sm.start_rotation(arn)
    db.invoke(arn, token, "createSecret")
    code, report = doctor(leak_check, arn)
    assert code == 4 and "may still be running" in report["headline"] and report["fixes"] == []
    code, report = doctor(leak_check, arn, *STALE)
    assert code == 4 and report["status"] == "pending"
    assert "a rotation stopped before setSecret changed the password" in report["headline"]
    assert versions(report)[token]["outcome"] == "refused"
    assert [(fix["stage"], fix["remove_from"]) for fix in report["fixes"]] == [("AWSPENDING", token)]
    assert "aws secretsmanager update-secret-version-stage" in report["fixes"][0]["command"]

    labels = db.sm.stages(arn)
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert main(["doctor", arn, *STALE, "--fix"]) == 4
    assert "nothing changed" in leak_check.read_output() and db.sm.stages(arn) == labels
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert main(["doctor", arn, *STALE, "--fix"]) == 0
    text = leak_check.read_output()
    assert f"done: take AWSPENDING off version {token}" in text
    assert "After the fix:" in text and "HEALTHY" in text
    assert list(db.sm.stages(arn).values()) == [[AWSCURRENT]]
    assert db.current_logs_in(arn)
    db.rotate(arn)
    assert db.current_logs_in(arn), "a new rotation completes"


@ON_BOTH
def test_a_rotation_stopped_after_set_secret_is_finished_by_the_fix(
    db: Database, leak_check: Watched
) -> None:
    arn = db.store(db.add_user())
    token = db.sm.start_rotation(arn)
    db.invoke(arn, token, "createSecret", "setSecret")
    code, report = doctor(leak_check, arn, *STALE)
    assert code == 1 and "setSecret changed the password to AWSPENDING's" in report["headline"]
    rows = versions(report)
    assert rows[token]["outcome"] == "logs in"
    assert [row["outcome"] for row in rows.values() if AWSCURRENT in row["stages"]] == ["refused"]
    code, report = doctor(leak_check, arn, *STALE, "--fix", "--yes")
    assert code == 0 and len(report["applied"]) == 2
    assert db.sm.stages(arn)[token] == [AWSCURRENT]
    assert sorted(db.sm.stages(arn).values()) == [["AWSCURRENT"], ["AWSPREVIOUS"]]
    assert db.current_logs_in(arn)


@ON_BOTH
def test_a_password_changed_outside_is_named_and_never_invented(db: Database, leak_check: Watched) -> None:
    user = db.add_user()
    arn = db.store(user)
    db.rotate(arn)
    db.admin.set_password(user.username, db.new_password())
    labels = db.sm.stages(arn)
    code, report = doctor(leak_check, arn, "--fix", "--yes")
    assert code == 1 and "no version logs in" in report["headline"]
    assert "changed outside Secrets Manager" in report["headline"]
    assert "never invents a password" in advice(report) and "put-secret-value" in advice(report)
    assert report["applied"] == [] and db.sm.stages(arn) == labels
    # The fix it names, done by a database administrator: the password back to AWSCURRENT's.
    db.admin.set_password(user.username, db.sm.value(arn, AWSCURRENT)["password"])
    assert doctor(leak_check, arn)[0] == 0
    assert db.current_logs_in(arn)


@ON_BOTH
def test_an_older_unlabelled_version_that_logs_in_is_put_back_as_current(
    db: Database, leak_check: Watched
) -> None:
    """A password restored outside Secrets Manager (from a backup, say) to a value no label holds."""
    user = db.add_user()
    arn = db.store(user)
    [original] = db.sm.stages(arn)
    db.rotate(arn)
    db.rotate(arn)
    db.admin.set_password(user.username, user.password)
    code, report = doctor(leak_check, arn)
    assert code == 1 and f"but version {original} (no label, created" in report["headline"]
    assert versions(report)[original]["outcome"] == "logs in"
    code, report = doctor(leak_check, arn, "--fix", "--yes")
    assert code == 0 and report["applied"][0].startswith(f"move AWSCURRENT to version {original}")
    assert db.sm.stages(arn)[original] == [AWSCURRENT]
    assert db.current_logs_in(arn)


@ON_BOTH
def test_a_refused_master_is_named_and_nothing_is_changed(db: Database, leak_check: Watched) -> None:
    user, master = db.add_user(), db.add_master()
    master_arn = db.store(master)
    arn = db.store(user, masterarn=master_arn)
    db.rotate(arn)
    db.admin.set_password(master.username, db.new_password())
    labels = db.sm.stages(arn)
    code, report = doctor(leak_check, arn, "--fix", "--yes")
    assert code == 1 and "the master secret's AWSCURRENT does not log in" in report["headline"]
    assert f"rotators doctor {master_arn}" in advice(report)
    assert "refused" in report["master"] and "alternating users" in report["strategy"]
    assert report["partner"].startswith(f"'{user.username}': version ") and "logs in" in report["partner"]
    assert report["applied"] == [] and db.sm.stages(arn) == labels
    assert db.current_logs_in(arn)


@ON_BOTH
def test_a_server_that_is_down_is_unreachable_and_nothing_is_changed(
    own_db: Database, leak_check: Watched
) -> None:
    arn = own_db.store(own_db.add_user())
    own_db.rotate(arn)
    labels = own_db.sm.stages(arn)
    own_db.stop()
    code, report = doctor(leak_check, arn, "--fix", "--yes")
    assert code == 3 and own_db.engine.unavailable in report["headline"]
    assert {row["outcome"] for row in report["versions"]} == {"unreachable", "not tried"}
    assert "security groups" in advice(report)
    assert report["applied"] == [] and own_db.sm.stages(arn) == labels
    own_db.server.start()
    assert doctor(leak_check, arn)[0] == 0
    assert own_db.current_logs_in(arn)


@ON_BOTH
def test_rotation_off_is_named_with_the_command_that_turns_it_on(db: Database, leak_check: Watched) -> None:
    arn = db.store(db.add_user())
    code, report = doctor(leak_check, arn, "--fix", "--yes")
    assert code == 1 and report["headline"] == "rotation is off: nothing will rotate this secret"
    assert f"rotators wire --secret-id {arn} --engine {db.engine.name}" in advice(report)
    assert report["last_attempt"] == "skipped: no cloudtrail:LookupEvents"
    assert report["applied"] == [] and db.current_logs_in(arn)
    db.rotate(arn)
    db.sm.client.cancel_rotate_secret(SecretId=arn)
    code, report = doctor(leak_check, arn, "--no-cloudtrail")
    assert code == 1 and f"its function was {db.sm.rotation_lambda_arn}" in report["headline"]
    assert f"--rotation-lambda-arn {db.sm.rotation_lambda_arn}" in advice(report)
    assert report["last_attempt"] == "skipped: --no-cloudtrail"


@pytest.fixture
def engine() -> Engine:
    """PostgreSQL, unless a test names its engines."""
    return POSTGRESQL


def test_all_walks_every_secret_of_a_function_with_progress_and_a_summary(
    db: Database, leak_check: Watched
) -> None:
    healthy = db.store(db.add_user())
    db.rotate(healthy)
    pending = db.store(db.add_user())
    db.invoke(pending, db.sm.start_rotation(pending), "createSecret")
    user = db.add_user()
    failing = db.store(user)
    db.rotate(failing)
    db.admin.set_password(user.username, db.new_password())
    unreachable = db.store(db.add_user(), port=_closed_port())
    db.sm.start_rotation(unreachable)
    db.store(db.add_user())  # rotation off: not this function's
    mine = {healthy: "healthy", pending: "pending", failing: "failing", unreachable: "unreachable"}

    leak_check.read_output()  # the rotations' metrics
    code = main(["doctor", "--all", "--function", db.sm.rotation_lambda_arn, *STALE, "--json"])
    report = json.loads(leak_check.read_output())
    assert code == 1, "the worst status: failing"
    assert {s["arn"]: s["status"] for s in report["secrets"] if s["arn"] in mine} == mine
    assert all(report["summary"][status] >= 1 for status in mine.values())
    progress = leak_check.output[-1]
    total = len(report["secrets"])
    assert [f"rotators doctor: {n}/{total} " in progress for n in range(1, total + 1)] == [True] * total

    name = db.sm.rotation_lambda_arn.rsplit(":", 1)[-1]
    assert main(["doctor", "--all", "--function", name, *STALE]) == 1
    table = leak_check.read_output()
    assert table.startswith("STATUS       SECRET")
    for arn, status in mine.items():
        secret = db.sm.client.describe_secret(SecretId=arn)["Name"]
        assert re.search(rf"^{status} +{secret} ", table, re.MULTILINE)
    assert re.search(
        r"^\d+ secret\(s\): \d+ healthy, \d+ pending, \d+ failing, \d+ unreachable$", table, re.M
    )


def test_doctor_needs_one_secret_or_all_with_a_function(local_sm: Any, leak_check: Watched) -> None:
    assert main(["doctor"]) == 2
    assert main(["doctor", "--all"]) == 2
    assert main(["doctor", "some-secret", "--all", "--function", "f"]) == 2
    leak_check.read_output()
    assert "name one SECRET, or use --all with --function" in leak_check.output[-1]


def _closed_port() -> int:
    """A port nothing listens on: a login there is refused by the operating system."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
