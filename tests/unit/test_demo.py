"""The demo's pure parts: reading an agent's metrics and status, the claims, and printing data
literally (a hosts.toml's ``[host."..."]`` line is a rich tag; ``:b:`` is an emoji code)."""

from __future__ import annotations

import io

from warmstart.agent.metrics import AgentMetrics
from warmstart.containerd.hosts import mirror_configs, mirror_host, render_hosts_toml
from warmstart_harness.demo_report import (
    AgentCounters,
    Claims,
    add_row,
    agent_tier,
    by_source,
    demo_console,
    parse_agent_metrics,
    prewarm_lines,
    show,
    table,
)

MIRROR = "http://127.0.0.1:5050"


def printed(*data: str, width: int = 40) -> str:
    out = io.StringIO()
    console = demo_console(file=out, width=width)
    for d in data:
        show(console, d)
    return out.getvalue()


def test_hosts_toml_printed_by_the_demo_keeps_its_host_table_line() -> None:
    [config] = mirror_configs(["127.0.0.1:5000"], mirror_host(MIRROR), insecure=["127.0.0.1:5000"])
    text = render_hosts_toml(config)
    assert f'[host."{MIRROR}"]' in text
    out = printed(text.rstrip(), width=30)  # narrower than the lines: no wrapping either
    assert out == text.rstrip() + "\n"
    assert f'\n[host."{MIRROR}"]\n' in out
    assert "[host]" in out  # the comment's


def test_urls_markup_and_emoji_codes_are_printed_as_written() -> None:
    data = "[bold]x[/] http://[fe80::a:b:1]:5000 [tag moved during the pre-warm] :b:"
    assert printed(data, width=200) == data + "\n"


def test_table_cells_are_data_too() -> None:
    out = io.StringIO()
    t = table("[b]title[/b]", "[col]")
    add_row(t, "http://[fe80::1]:5050 :b: [host]")
    demo_console(file=out, width=120).print(t)
    text = out.getvalue()
    assert "[b]title[/b]" in text and "[col]" in text
    assert "http://[fe80::1]:5050 :b: [host]" in text


def test_metrics_are_read_from_the_agents_exposition() -> None:
    m = AgentMetrics()
    m.request("blob", "GET", 200)
    m.request("blob", "GET", 206)
    m.request("blob", "GET", 404)
    m.request("blob", "HEAD", 200)  # not a GET
    m.request("manifest", "GET", 200)  # not a blob
    m.served("local", 1000)
    m.served("peer", 20)
    m.fetched("upstream", 300)
    m.fetched("peer", 40)
    m.linked("linked", 5)
    m.linked("copied", 6)
    m.linked("present", 7)  # already in containerd: not counted
    counters = parse_agent_metrics(m.render()[0].decode())
    assert counters.blob_gets == 3
    assert counters.served == {"local": 1000, "peer": 20, "upstream": 0}
    assert counters.fetched == {"upstream": 300, "peer": 40}
    assert (counters.linked_blobs, counters.linked_bytes) == (2, 11)


def test_an_agent_with_nothing_recorded_reads_as_zeros() -> None:
    counters = parse_agent_metrics(AgentMetrics().render()[0].decode())
    assert counters.blob_gets == counters.linked_blobs == counters.linked_bytes == 0
    assert not any(counters.served.values()) and not any(counters.fetched.values())
    assert parse_agent_metrics("") == AgentCounters()


def test_a_step_is_the_difference_of_two_readings() -> None:
    before = AgentCounters({"local": 10}, {"peer": 5}, 2, 1, 100)
    after = AgentCounters({"local": 15, "upstream": 3}, {"peer": 5}, 6, 4, 400)
    delta = after.minus(before)
    assert delta == AgentCounters({"local": 5, "upstream": 3}, {"peer": 0}, 4, 3, 300)
    assert by_source(delta.served) == "local 5 B\nupstream 3 B"
    assert by_source(delta.fetched) == by_source({}) == "0"


def test_tier_of_an_image_in_the_agents_status() -> None:
    status = {
        "images": [
            {"reference": "127.0.0.1:5000/demo/embedder:v1", "tier": "warm"},
            {"reference": "127.0.0.1:5000/demo/embedder:v2", "tier": "hot"},
        ]
    }
    assert agent_tier(status, "127.0.0.1:5000/demo/embedder:v1") == "warm"
    assert agent_tier(status, "127.0.0.1:5000/demo/embedder:v2") == "hot"
    assert agent_tier(status, "127.0.0.1:5000/demo/embedder:v3") == "none"
    assert agent_tier({}, "127.0.0.1:5000/demo/embedder:v1") == "none"


def test_claims_name_the_first_that_did_not_hold() -> None:
    claims = Claims()
    assert claims.equal("no upstream blob GET", 0, 0, "upstream blob GETs")
    assert claims.failure_line() is None
    assert not claims.equal("no blob GET at the agent", 2, 0, "blob GETs")
    assert not claims.check("scaled out", "1 ready", False)
    line = claims.failure_line()
    assert line == (
        "demo failed: did not hold: no blob GET at the agent (measured: 2 blob GETs); "
        "1 more claim(s) did not hold"
    )
    out = io.StringIO()
    demo_console(file=out, width=120).print(claims.table())
    text = out.getvalue()
    assert "no upstream blob GET" in text and "0 upstream blob GETs" in text
    assert text.count("NO") == 2 and "yes" in text


def test_prewarm_answer_shows_the_link_pull_unpack_split() -> None:
    result = {
        "blobs": 3,
        "bytes": 3 << 20,
        "sources": {"local": 1 << 20, "upstream": 2 << 20},
        "warm_seconds": 1.234,
        "containerd": {
            "link": {"linked": 2, "linked_bytes": 2 << 20, "present": 1, "missing": 0,
                     "seconds": 0.01},
            "pull_seconds": 0.5,
            "unpack_seconds": 0.42,
            "tag_moved": True,
        },
    }  # fmt: skip
    assert prewarm_lines(result) == [
        "3 blobs, 3.0 MiB (local 1.0 MiB, upstream 2.0 MiB) in the agent's store in 1.23 s",
        "containerd.link: 2 blobs linked (2.0 MiB), 1 already there, 0 missing, 0.01 s",
        "containerd.pull_seconds: 0.50 s (ctr images pull), of which "
        "containerd.unpack_seconds: 0.42 s",
    ]
    assert prewarm_lines({"blobs": 1, "bytes": 0, "sources": {}, "warm_seconds": 0})[0] == (
        "1 blobs, 0 B (no bytes) in the agent's store in 0.00 s"
    )
