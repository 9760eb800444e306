"""The command-line tools as a station clerk meets them: names in Chinese and English, a
prefecture by code or name, one line (never a traceback) for a closed pipe, a stack that is
not running or a port in use, the bare token, and .stack/env found from any directory."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from aiokafka.errors import KafkaConnectionError
from pydantic import SecretStr

from gateway import auth, serve, tokens
from infra import process, stack
from infra.markets import load_prefectures
from infra.settings import CHECKOUT, GatewaySettings, Settings
from producers import kiosk
from schemas import events as ev
from schemas.events import SKILLS
from schemas.names import SKILL_NAMES_ZH, skill_from, skill_label

pytestmark = pytest.mark.unit

BIN = Path(sys.executable).parent
SECRET = "s" * 40
AT = 1_790_000_000_000


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port something listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def stack_down_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a machine whose stack is not running: every service on a closed
    port, and a stack directory of its own (no .stack/env of a running stack leaks in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIG_")}
    return env | {
        "GIG_STACK_DIR": str(tmp_path / "stack"),
        "GIG_KAFKA_BOOTSTRAP": f"127.0.0.1:{closed_port()}",
        "GIG_REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0",
        "GIG_PG_DSN": f"postgresql://postgres@127.0.0.1:{closed_port()}/gig",
        "GIG_GATEWAY__SECRET": SECRET,
    }


# --- names -------------------------------------------------------------------------------------


def test_every_skill_has_a_chinese_name_and_is_found_by_any_of_its_names() -> None:
    assert set(SKILL_NAMES_ZH) == set(SKILLS)
    for skill, zh in SKILL_NAMES_ZH.items():
        assert skill_from(skill) == skill_from(zh) == skill
        assert skill_from(skill.replace("_", " ").upper()) == skill
    assert skill_label("general_labourer") == "普工 general labourer"
    assert skill_from("astronaut") is None
    assert kiosk.skill_arg(" 厨师 ") == "cook"
    with pytest.raises(argparse.ArgumentTypeError, match="瓦工"):
        kiosk.skill_arg("astronaut")


@pytest.mark.parametrize(
    ("text", "code"),
    [("4301", "4301"), ("Changsha", "4301"), ("CHANGSHA", "4301"), ("长沙", "4301"),
     ("长沙市", "4301"), ("湘西", "4331"), ("zhangjiajie", "4308"), ("ＣＨＡＮＧＳＨＡ", "4301")],
)  # fmt: skip
def test_a_prefecture_is_found_by_code_english_or_chinese_name(text: str, code: str) -> None:
    assert kiosk.find_prefecture(text, load_prefectures()).code == code


@pytest.mark.parametrize("text", ["Atlantis", "43", "chang", ""])
def test_an_unknown_or_ambiguous_prefecture_lists_the_valid_ones(text: str) -> None:
    with pytest.raises(kiosk.KioskError) as refused:
        kiosk.find_prefecture(text, load_prefectures())
    for p in load_prefectures():
        assert f"{p.code} {p.name_zh} {p.name_en}" in str(refused.value)


def test_markets_of_a_prefecture_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        kiosk.main(["markets", "--prefecture", "Changsha"])
    assert done.value.code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.split("\t")[0][1:5] == "4301" for line in lines)
    assert "长沙市第1零工市场\tChangsha Gig Market 1" in lines[0]
    with pytest.raises(SystemExit) as refused:
        kiosk.main(["markets", "--prefecture", "Atlantis"])
    assert refused.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "4301 长沙市 Changsha" in err


# --- what the kiosk prints ---------------------------------------------------------------------


def wave(offered: int, radius_km: float = 3.0) -> ev.WaveSent:
    notes = tuple(
        ev.CandidateNote(worker_id=f"W-{i}", distance_km=1.0, score=1.0, outcome="offered")
        for i in range(offered)
    )
    return ev.WaveSent(event_id=f"ws:{offered}:{radius_km}", at_ms=AT, request_id="R-1",
                       wave=1, radius_km=radius_km, candidates=notes)  # fmt: skip


def test_a_wave_that_reached_nobody_is_not_printed() -> None:
    assert kiosk.describe(wave(0)) is None
    assert kiosk.describe(wave(2)) == "已推送 2 个邀约 / offers sent to 2 workers within 3 km"


def test_a_job_change_is_printed_and_an_unknown_event_skipped() -> None:
    changed = SimpleNamespace(type="JobChanged", worker_id="W-7", status="no_show", by="station",
                              reason="did not come")  # fmt: skip
    line = kiosk._job_line(changed)
    assert line == "工人 / worker W-7: 未到 / did not come (no-show) (station: did not come)"
    job_changed = getattr(ev, "JobChanged", None)  # the message, once the schema has it
    if job_changed is not None:
        done = job_changed(event_id="jc:1", at_ms=AT, request_id="R-1", worker_id="W-7",
                           offer_id="O-1", status="done", by="worker", reason="")  # fmt: skip
        assert kiosk.describe(done) == "工人 / worker W-7: 已完工 / done (worker)"
    assert kiosk.parse_event('{"type": "SomethingNew", "request_id": "R-1"}') is None
    assert kiosk.parse_event("not json") is None


POSTED = kiosk.Posted("R-1", "G4301001", "cook", 3, 300.0, 10.0)


def test_a_partly_filled_expiry_says_what_to_do_with_the_flags() -> None:
    text = "\n".join(kiosk.advice(POSTED, assigned=1, widest_km=12.0, widest_allowed_km=50.0))
    assert "2 of 3 still missing" in text
    assert "reached 12 km" in text and "--deadline-min 20" in text
    assert "300 → 360" in text and "--wage 360" in text
    assert ("gig-kiosk post --market G4301001 --skill cook --headcount 2 --wage 360 "
            "--deadline-min 20") in text  # fmt: skip
    widest = "\n".join(kiosk.advice(POSTED, assigned=0, widest_km=50.0, widest_allowed_km=50.0))
    assert "already reached 50 km" in widest and "--headcount 3" in widest


def sse(*events: str) -> bytes:
    return "".join(f"id: {i}\nevent: x\ndata: {e}\n\n" for i, e in enumerate(events)).encode()


async def test_the_kiosk_follows_the_stream_skips_what_it_does_not_know_and_advises(
    capsys: pytest.CaptureFixture[str],
) -> None:
    expired = ev.RequestExpired(event_id="rx:R-1", at_ms=AT, request_id="R-1", assigned=1,
                                headcount=3, offers_made=4)  # fmt: skip
    body = sse(
        wave(0).model_dump_json(),
        '{"type": "SomethingNew", "event_id": "n:1"}',
        wave(4, 6.0).model_dump_json(),
        wave(4, 6.0).model_dump_json(),  # a resumed stream repeats nothing
        expired.model_dump_json(),
    )
    transport = httpx.MockTransport(lambda _: httpx.Response(200, content=body))
    async with httpx.AsyncClient(transport=transport, base_url="http://kiosk.test") as http:
        code = await kiosk._follow_http(http, {}, POSTED, Settings(_env_file=None))
    out = capsys.readouterr().out
    assert code == 1
    assert "0 workers" not in out
    assert out.count("offers sent to 4 workers within 6 km") == 1
    assert "expired with 1 of 3" in out and "reached 6 km" in out and "--wage 360" in out


# --- how a command ends -------------------------------------------------------------------------


def ended(body: object, *expected: type[Exception]) -> int:
    with pytest.raises(SystemExit) as done:
        process.run_cli("gig-test", body, expected)  # type: ignore[arg-type]
    assert isinstance(done.value.code, int)
    return done.value.code


def test_run_cli_ends_each_way_in_at_most_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def raises(e: BaseException) -> object:
        def body() -> None:
            raise e

        return body

    assert ended(lambda: 3) == 3
    assert ended(raises(BrokenPipeError())) == process.EX_PIPE
    assert capsys.readouterr().err == ""
    assert ended(raises(process.Unavailable("Kafka at x is not running"))) == 69
    assert ended(raises(KafkaConnectionError("Unable to bootstrap"))) == 69
    assert ended(raises(ConnectionRefusedError(111, "Connect call failed"))) == 69
    assert ended(raises(ValueError("not a valid id")), ValueError) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "gig-test: Kafka at x is not running",
        "gig-test: Kafka cannot be reached (KafkaConnectionError: Unable to bootstrap): is it "
        f"running? {process.START_STACK}",
        "gig-test: a service cannot be reached ([Errno 111] Connect call failed): is it "
        f"running? {process.START_STACK}",
        "gig-test: not a valid id",
    ]
    with pytest.raises(RuntimeError):
        ended(raises(RuntimeError("a bug shows its traceback")))


def test_require_names_every_service_that_is_down() -> None:
    down = Settings(_env_file=None, kafka_bootstrap=f"127.0.0.1:{closed_port()}",
                    redis_url=f"redis://127.0.0.1:{closed_port()}/0")  # fmt: skip
    with pytest.raises(process.Unavailable) as refused:
        process.require(down, "kafka", "redis")
    assert str(refused.value).startswith(f"Kafka at {down.kafka_bootstrap} and Redis at 127.0.0.1:")
    assert "are not running: start the stack with `make up`" in str(refused.value)


def test_a_closed_pipe_ends_the_listing_quietly() -> None:
    """``gig-kiosk markets | head -1``: thousands of lines, a reader that takes one."""
    argv = [str(BIN / "gig-kiosk"), "markets"]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.stdout.close()
        err = proc.stderr.read().decode()
        assert proc.wait(timeout=60) == process.EX_PIPE
    assert first.startswith(b"G4301001\t")
    assert err == ""


def test_with_the_stack_down_each_command_says_what_to_run_in_one_line(tmp_path: Path) -> None:
    env = stack_down_env(tmp_path)
    gateway = f"http://127.0.0.1:{closed_port()}"
    commands = {
        "gig-kiosk": ["post", "--market", "G4301001", "--skill", "cook", "--key", "k",
                      "--gateway", gateway],
        "gig-workers": ["--count", "1"],
        "gig-load": ["--requests", "1"],
        "gig-archiver": [],
        "replay": ["status"],
        "gig-stack": ["groups"],
        "gig-gateway": ["--port", "0"],
    }  # fmt: skip
    running = {
        name: subprocess.Popen([BIN / name, *argv], env=env, cwd=tmp_path, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name, argv in commands.items()
    }  # fmt: skip
    said = {}
    for name, proc in running.items():
        out, said[name] = proc.communicate(timeout=120)
        assert proc.returncode == process.EX_UNAVAILABLE, (name, said[name])
        assert out == "" and len(said[name].splitlines()) == 1, (name, said[name])
        assert said[name].startswith(f"{name}: ") and "not running" in said[name]
    assert said["gig-kiosk"].startswith(f"gig-kiosk: the gateway is not running at {gateway}")
    assert "`make serve`" in said["gig-kiosk"]
    assert all("`make up`" in line for name, line in said.items() if name != "gig-kiosk")
    assert (
        f"PostgreSQL at 127.0.0.1:{env['GIG_PG_DSN'].split(':')[2].split('/')[0]}"
        in (said["replay"])
    )


def test_kiosk_direct_with_kafka_down_says_so(tmp_path: Path) -> None:
    env = stack_down_env(tmp_path)
    argv = ["post", "--direct", "--market", "G4301001", "--skill", "普工"]
    done = subprocess.run([BIN / "gig-kiosk", *argv], env=env, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert done.returncode == process.EX_UNAVAILABLE
    assert done.stderr == (f"gig-kiosk: Kafka at {env['GIG_KAFKA_BOOTSTRAP']} is not running: "
                           f"{process.START_STACK}\n")  # fmt: skip


# --- gig-token ---------------------------------------------------------------------------------


def test_gig_token_prints_the_bare_token_and_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(_env_file=None, gateway=GatewaySettings(secret=SecretStr(SECRET)))
    monkeypatch.setattr(tokens, "get_settings", lambda: settings)
    with pytest.raises(SystemExit) as done:
        tokens.main(["station", "G4301001"])
    assert done.value.code == 0
    out, err = capsys.readouterr()
    token = out.removesuffix("\n")
    assert "\n" not in token and " " not in token
    assert auth.verify_token(SECRET, token).subject == "G4301001"
    assert "station G4301001" in err and auth.station_key(SECRET, "G4301001") in err
    with pytest.raises(SystemExit):
        tokens.main(["station", "G4301001", "--key"])
    assert capsys.readouterr().out == auth.station_key(SECRET, "G4301001") + "\n"
    with pytest.raises(SystemExit) as refused:
        tokens.main(["worker", "W-1", "--key"])
    assert refused.value.code == 2
    assert capsys.readouterr().out == ""


# --- the gateway's port -------------------------------------------------------------------------


def test_a_busy_port_is_refused_before_anything_starts(
    busy_port: int, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(_env_file=None, gateway=GatewaySettings(port=busy_port))
    monkeypatch.setattr(serve, "get_settings", lambda: settings)

    def no_stack(_: Settings) -> str:
        raise AssertionError("the stack was started although the port is taken")

    monkeypatch.setattr(stack, "up", no_stack)
    for main in (serve.main, serve.gateway_main):  # gig-serve (make serve), gig-gateway
        with pytest.raises(SystemExit) as refused:
            main([])
        assert refused.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1
        assert f"port {busy_port} on 127.0.0.1 is in use" in err
        assert f"GIG_GATEWAY__PORT={busy_port + 1}" in err


# --- .stack/env from any directory -----------------------------------------------------------


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout of its own: infra/ copied (settings finds .stack/ from its own place), the
    other packages linked, and a .stack/env naming a Kafka port nobody listens on."""
    root = tmp_path / "checkout"
    shutil.copytree(CHECKOUT / "infra", root / "infra",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    for package in ("schemas", "dispatch", "consumers", "producers", "gateway", "archive"):
        (root / package).symlink_to(CHECKOUT / package)
    (root / ".stack").mkdir()
    (root / ".stack" / "env").write_text(f"GIG_KAFKA_BOOTSTRAP=127.0.0.1:{closed_port()}\n")
    (root / "docs" / "deep").mkdir(parents=True)
    return root


@pytest.mark.parametrize("where", ["/tmp", "checkout", "checkout/docs/deep"])
def test_the_stack_env_is_found_from_any_directory(checkout: Path, where: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIG_")}
    env["PYTHONPATH"] = str(checkout)
    cwd = Path(where) if where == "/tmp" else checkout.parent / where
    done = subprocess.run([sys.executable, "-m", "producers.workers"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    bootstrap = (checkout / ".stack" / "env").read_text().strip().split("=", 1)[1]
    assert done.returncode == process.EX_UNAVAILABLE, done.stderr
    assert done.stderr.startswith(f"gig-workers: Kafka at {bootstrap} is not running")
