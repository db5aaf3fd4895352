"""Three API replicas behind HAProxy (Debian's, run from the compose configuration), one
PostgreSQL prediction log and one MLflow tracking server, under steady traffic: a promotion, a
replica SIGKILLed (during a log-store outage, so it leaves a spill to replay) and a rolling
update (a replica drained, SIGTERMed and replaced)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from harness.data import review_sample
from harness.load_balancer import CONFIG, LoadBalancer, check_config, haproxy_binary
from harness.processes import wait_until
from harness.registries import Registry, make_registry
from harness.replicas import (
    Exchange,
    Replica,
    SteadyTraffic,
    logged_predictions,
    make_replicas,
    start_all,
    stop_all,
)
from harness.servers import MlflowServer, PostgresCluster, postgres_cluster
from training.registry import promote
from training.settings import TrainingSettings

pytestmark = pytest.mark.integration

POLL_INTERVAL_S = 1.0
FLUSH_INTERVAL_S = 0.5  # the log writer's default: what a SIGKILL may lose is stated in it


@dataclass
class Fleet:
    registry: Registry
    versions: tuple[str, str]
    promoter: TrainingSettings  # training settings on the tracking server the replicas poll
    cluster: PostgresCluster
    replicas: list[Replica]
    lb: LoadBalancer
    texts: list[str]
    tags: Iterator[int]

    def traffic(self) -> SteadyTraffic:
        return SteadyTraffic(self.lb.url, self.texts, clients=3, tags=self.tags.__next__)

    def served_by(self, traffic: SteadyTraffic) -> dict[str, dict[str, Any]]:
        """The load balancer's access log by its request id, once every answered request is in
        it (HAProxy logs a request after its answer left, so the last lines can trail)."""
        answered = {e.lb_id for e in traffic.acknowledged()}
        entries: dict[str, dict[str, Any]] = {}

        def complete() -> bool:
            entries.update((entry["id"], entry) for entry in self.lb.access_log())
            return answered <= entries.keys()

        wait_until(complete, 10, "HAProxy's access log")
        return entries


@pytest.fixture(scope="module")
def fleet(imdb_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    try:
        haproxy_binary()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    workdir = tmp_path_factory.mktemp("replicas")
    registry = make_registry(imdb_sample, workdir)
    # version 2: the same trained model registered again (what is served is the version)
    client = MlflowClient(tracking_uri=registry.tracking_uri, registry_uri=registry.tracking_uri)
    first = client.get_model_version(registry.settings.model_name, registry.versions[0])
    assert first.source is not None
    second = client.create_model_version(first.name, first.source, run_id=first.run_id)
    versions = (registry.versions[0], str(second.version))
    tracking = MlflowServer(registry.tracking_uri, workdir / "artifacts", workdir / "mlflow.log")
    with postgres_cluster() as cluster:
        replicas = make_replicas(
            3, workdir, tracking.url, cluster.url, poll_interval_s=str(POLL_INTERVAL_S)
        )
        lb: LoadBalancer | None = None
        try:
            tracking.start()
            start_all(replicas)
            lb = LoadBalancer([(r.name, r.port) for r in replicas], workdir)
            lb.wait_for_states(dict.fromkeys((r.name for r in replicas), "UP"))
            promoter = registry.settings.model_copy(update={"tracking_uri": tracking.url})
            texts = review_sample(imdb_sample, 300, seed=3)
            tags = iter(range(1, 10**9))
            yield Fleet(registry, versions, promoter, cluster, replicas, lb, texts, tags)
        finally:
            if lb is not None:
                lb.stop()
            stop_all(replicas)
            tracking.stop()


def wait_until_logged(fleet: Fleet, exchanges: list[Exchange], timeout: float = 30) -> None:
    wanted = {e.request_id for e in exchanges}

    def logged() -> bool:
        return wanted <= {row[0] for row in logged_predictions(fleet.cluster.url)}

    wait_until(logged, timeout, "every acknowledged prediction in the log")


def assert_logged_exactly_once(fleet: Fleet, traffic: SteadyTraffic) -> None:
    """Each acknowledged prediction is one row with its text and the version that answered it;
    nothing this traffic sent that went unanswered was logged."""
    acked = traffic.acknowledged()
    wait_until_logged(fleet, acked)
    sent_tags = {e.tag for e in traffic.exchanges}
    rows = [row for row in logged_predictions(fleet.cluster.url) if row[1] in sent_tags]
    by_id = {request_id: (tag, version) for request_id, tag, version in rows}
    per_tag = Counter(tag for _, tag, _ in rows)
    wrong = [e for e in acked if by_id.get(e.request_id) != (e.tag, e.version)]
    assert not wrong, wrong[:5]
    assert all(per_tag[e.tag] == 1 for e in acked), per_tag.most_common(3)
    assert len(rows) == len(acked)  # nothing unacknowledged


@pytest.mark.timeout(240)
def test_a_promotion_reaches_every_replica_in_time_with_no_failed_request(fleet: Fleet) -> None:
    before = {r.model_version() for r in fleet.replicas}
    assert len(before) == 1
    old = before.pop()
    new = next(v for v in fleet.versions if v != old)
    lag: dict[str, float] = {}
    with fleet.traffic() as traffic:
        traffic.wait_for(30)
        promoted_at = time.time()
        promote(fleet.promoter, new, reason="replica test: promotion under traffic")
        deadline = promoted_at + POLL_INTERVAL_S + 5

        def every_replica_serves_new() -> bool:
            for replica in fleet.replicas:
                if replica.name not in lag and replica.model_version() == new:
                    lag[replica.name] = time.time() - promoted_at
            return len(lag) == len(fleet.replicas)

        wait_until(every_replica_serves_new, 30, "every replica on the new version", 0.05)
        traffic.wait_for(30)

    assert traffic.failed() == [], traffic.failed()[:5]
    assert max(lag.values()) <= POLL_INTERVAL_S + 5, lag
    acked = traffic.acknowledged()
    assert {e.version for e in acked} == {old, new}
    late = [e for e in acked if e.sent > deadline and e.version != new]
    assert not late, late[:5]
    # every replica answered: the load balancer spread the traffic
    served = fleet.served_by(traffic)
    assert {served[e.lb_id]["server"] for e in acked} == {r.name for r in fleet.replicas}
    assert_logged_exactly_once(fleet, traffic)


@pytest.mark.timeout(240)
def test_a_sigkilled_replica_costs_only_its_requests_in_flight_and_replays_its_spill(
    fleet: Fleet,
) -> None:
    victim = fleet.replicas[1]
    with fleet.traffic() as traffic:
        traffic.wait_for(30)
        # The store out for a while first: the victim's records go to its spill folder.
        fleet.cluster.stop()
        wait_until(lambda: len(victim.spill_files()) >= 2, 30, "the victim spilling")
        traffic.wait_for(20)
        killed_at = time.time()
        victim.running().kill()
        noticed_s = fleet.lb.wait_for_states({victim.name: "DOWN"}, timeout=15)
        traffic.wait_for(20)
        fleet.cluster.start()
        spilled = sum(len(p.read_text().splitlines()) for p in victim.spill_files())
        victim.start()  # same port, same spill folder
        wait_until(lambda: not victim.spill_files(), 60, "the restarted replica's replay")
        replayed = victim.scrape().get("emotitrack_prediction_log_replayed_total", 0.0)
        fleet.lb.wait_for_states({victim.name: "UP"}, timeout=15)
        traffic.wait_for(30)
    assert victim.running().process.poll() is None

    served = fleet.served_by(traffic)
    # In flight on the victim when it died: sent before, ended after, and routed to it; or not
    # in the access log at all (HAProxy closes the client's connection without an answer, and
    # without a log line, when a reused server connection dies: HTTP keep-alive semantics).
    in_flight = [
        e
        for e in traffic.exchanges
        if e.sent <= killed_at <= e.ended
        and served.get(e.lb_id, {"server": victim.name})["server"] == victim.name
    ]
    failed = traffic.failed()
    assert all(e in in_flight for e in failed if e.sent <= killed_at), (failed, in_flight)
    # later ones only until HAProxy noticed: a request it sent over a pooled connection to the
    # dead replica before the connection's close reached it
    assert all(e.sent <= killed_at + noticed_s for e in failed), (failed, killed_at, noticed_s)
    assert len(failed) <= traffic.clients, failed
    assert noticed_s <= 2 * 1.0 + 2.0  # fall 2 checks, inter 1 s, plus the check timeout
    assert spilled > 0 and replayed == spilled, (spilled, replayed)

    # lost: acknowledged by the victim in its last flush intervals, neither written nor spilled
    acked = traffic.acknowledged()
    wait_until(lambda: not any(r.spill_files() for r in fleet.replicas), 30, "every spill replayed")
    survivors = [e for e in acked if served[e.lb_id]["server"] != victim.name or e.sent > killed_at]
    wait_until_logged(fleet, survivors)
    logged_tags = {row[1] for row in logged_predictions(fleet.cluster.url)}
    lost = [e for e in acked if e.tag not in logged_tags]
    window = 2 * FLUSH_INTERVAL_S
    assert all(served[e.lb_id]["server"] == victim.name for e in lost), lost
    assert all(killed_at - window <= e.ended <= killed_at for e in lost), (lost, killed_at)
    rows = [row for row in logged_predictions(fleet.cluster.url) if row[1] is not None]
    per_tag = Counter(tag for _, tag, _ in rows)
    assert all(per_tag[e.tag] == 1 for e in acked if e not in lost)
    print(  # the measured figures, for the report
        f"SIGKILL: {len(failed)} failed (sent {[round(e.sent - killed_at, 3) for e in failed]} s "
        f"after the kill), {len(in_flight)} in flight on {victim.name}; "
        f"down after {noticed_s:.2f} s; {spilled} spilled, {replayed:.0f} replayed; "
        f"{len(lost)} lost of {len(acked)} acknowledged"
    )


@pytest.mark.timeout(240)
def test_a_rolling_update_drain_then_sigterm_fails_no_request(fleet: Fleet) -> None:
    """As an orchestrator does it: out of rotation first (HAProxy's runtime API here; endpoint
    removal and a preStop pause on Kubernetes), SIGTERM once nothing is in flight, a new
    process, back in rotation. A bare SIGTERM can cut a request: see docs/scaling.md."""
    victim = fleet.replicas[2]
    with fleet.traffic() as traffic:
        traffic.wait_for(40)
        fleet.lb.set_state(victim.name, "drain")
        drained_at = time.time()
        wait_until(lambda: fleet.lb.sessions(victim.name) == 0, 30, "the drain", 0.05)
        exit_code = victim.running().terminate()
        traffic.wait_for(20)
        victim.start()
        fleet.lb.set_state(victim.name, "ready")
        back_at = time.time()
        fleet.lb.wait_for_states({victim.name: "UP"}, timeout=15)
        traffic.wait_for(40)

    assert exit_code == 0
    assert traffic.failed() == [], traffic.failed()[:5]
    served = fleet.served_by(traffic)
    on_victim = [e for e in traffic.acknowledged() if served[e.lb_id]["server"] == victim.name]
    assert any(e.sent < drained_at for e in on_victim)  # it had traffic when it was drained
    assert any(e.sent > back_at for e in on_victim)  # and its replacement took traffic
    assert_logged_exactly_once(fleet, traffic)


def test_the_tests_config_is_the_compose_config_with_loopback_servers(fleet: Fleet) -> None:
    check_config(CONFIG)  # the compose file itself, DNS backends and all, passes `haproxy -c`
    compose = CONFIG.read_text()
    rendered = fleet.lb.config.read_text()
    assert "server-template api 10 api:8000 check resolvers docker init-addr none" in compose
    servers = [line.split() for line in rendered.splitlines() if line.strip().startswith("server ")]
    assert [s[1] for s in servers] == [r.name for r in fleet.replicas]
    assert all(s[3:] == ["check"] for s in servers)

    def unchanged(text: str) -> list[str]:
        return [
            line
            for line in text.splitlines()
            if not line.strip().startswith(("server", "bind", "stats socket"))
        ]

    assert unchanged(rendered) == unchanged(compose)
