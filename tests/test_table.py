import pytest

import referee
from referee._core.schema import ConditionDoc
from referee._tools.table import (
    COLUMNS,
    md_escape,
    render_condition,
    render_table,
    table_rows,
)
from referee.cli import main


X = "\N{MULTIPLICATION SIGN}"

PIPES = """\
policy: pipes
description: "a <b>bold</b> | piped policy"
rules:
  - id: either
    when:
      status: 400
      body: {message: {matches: "quota|limit"}, tag: "<i>"}
    do: abort
    alert: {kind: top_up, severity: error}
"""


def condition(yaml_when):
    """
    The structured `when` of a one-rule policy.
    """
    text = f"policy: c\nrules:\n  - when: {yaml_when}\n    do: abort\n"
    return referee.load_policy_text(text).rules[0].doc.when


def row(policy, rule_id):
    """
    The table row of *rule_id*, as a column -> cell mapping.
    """
    for cells in table_rows(policy):
        if cells[0] == rule_id:
            return dict(zip(COLUMNS, cells, strict=True))
    raise KeyError(rule_id)


class TestRenderCondition:
    @pytest.mark.parametrize(
        ("when", "expected"),
        [
            ("{status: 429}", "status 429"),
            ("{status: 5xx}", "status 5xx"),
            ("{status: [500, 502, 503, 504]}", "status 500,502-504"),
            ("{status: [4xx, 503]}", "status 4xx,503"),
            ("{method: GET, status: 200}", "GET and status 200"),
            (
                "{body: {qualification: ongoing}}",
                "body.qualification = ongoing",
            ),
            ("{body: {n: [1, 2]}}", "body.n in [1, 2]"),
            ("{headers: {X-Id: {exists: false}}}", "header X-Id absent"),
            ("{failure: connect}", "failure connect"),
            ("{attempt: {gte: 3}}", "attempt >= 3"),
            (
                "{any: [{status: 402}, {status: 422}]}",
                "any(status 402, status 422)",
            ),
            ("{not: {method: GET}}", "not(GET)"),
            ("{path: '/jobs/*'}", "path /jobs/*"),
        ],
        ids=lambda v: v,
    )
    def test_renders(self, when, expected):
        """
        A `when` renders compactly.
        """
        assert expected == render_condition(condition(when))

    def test_no_condition(self):
        """
        A rule without `when` matches always.
        """
        assert "always" == render_condition(None)
        assert "always" == render_condition(ConditionDoc())


class TestRows:
    def test_enrow_out_of_credits(self):
        """
        Enrow's out-of-credits row aborts with InsufficientCredits, alerts
        topup and opens the credits breaker for POSTs.
        """
        r = row(referee.load_policy("enrow"), "out-of-credits")

        assert {
            "rule": "out-of-credits",
            "origin": "enrow",
            "condition": "any(status 402, status 422 and body.message "
            "matches (?i)insufficient)",
            "action": "abort",
            "delays": "",
            "error": "InsufficientCredits",
            "alert": "topup critical, dedupe 1h",
            "breaker": "credits 10m POST",
        } == r

    def test_inherited_rules_keep_their_origin(self):
        """
        Rules of the extended policy come last, with their origin.
        """
        rows = table_rows(referee.load_policy("enrow"))

        assert "enrow" == rows[0][1]
        assert "http-default" == rows[-1][1]

    def test_retry_delays(self):
        """
        A retry's delays give attempts, backoff, jitter and hints.
        """
        r = row(referee.load_policy("enrow"), "rate-limited")

        assert (
            "4 attempts, 1s" + X + "2 ≤30s full jitter, hints Retry-After, "
            "retry-after-ms, X-RateLimit-Reset, unsafe methods too"
        ) == r["delays"]

    def test_poll_delays(self):
        """
        A poll's delays give its schedule and deadline.
        """
        r = row(referee.load_policy("enrow"), "bulk-ongoing")

        assert r["delays"].startswith("10s" + X + "1.5 ≤30s, deadline 30m")
        assert "DeadlineExceeded" == r["error"]

    def test_abort_by_status(self):
        """
        An abort without error names the error its status gives.
        """
        policy = referee.load_policy_text(
            "policy: p\nrules:\n  - {when: {status: 403}, do: abort}\n"
        )

        assert "PermissionDenied" == table_rows(policy)[0][5]


class TestRenderTable:
    def test_header(self):
        """
        The Markdown header gives the name, sources and defaults.
        """
        text = render_table(referee.load_policy("enrow"), "md")

        assert text.startswith("## enrow\n")
        assert "- sources: enrow → http-default\n" in text
        assert "- deadline: 2m\n" in text
        assert "- rate\\_limit: 10 per 1s, POST, by path\n" in text
        assert "- budget: off\n" in text

    def test_markdown_escapes(self):
        """
        Pipes and other Markdown specials in cells are escaped.
        """
        text = render_table(referee.load_policy_text(PIPES), "md")

        assert "matches quota\\|limit" in text
        assert "body.tag = \\<i\\>" in text
        assert "top\\_up error" in text
        assert "a \\<b\\>bold\\</b\\> \\| piped policy" in text
        rows = [line for line in text.splitlines() if line.startswith("| ")]
        unescaped = [line.replace("\\|", "").count("|") - 1 for line in rows]
        assert [len(COLUMNS)] * 2 == unescaped

    def test_html_escapes(self):
        """
        HTML output escapes every text.
        """
        text = render_table(referee.load_policy_text(PIPES), "html")

        assert "<p>a &lt;b&gt;bold&lt;/b&gt; | piped policy</p>" in text
        assert "body.tag = &lt;i&gt;</td>" in text
        assert "<b>" not in text
        assert "<i>" not in text

    def test_unknown_format(self):
        """
        An unknown format is a ValueError naming the known ones.
        """
        with pytest.raises(ValueError, match="md, html"):
            render_table(referee.load_policy("enrow"), "pdf")

    @pytest.mark.parametrize("name", referee.bundled_names())
    @pytest.mark.parametrize("fmt", ["md", "html"])
    def test_every_bundled_policy(self, name, fmt):
        """
        Every bundled policy renders, one row per rule.
        """
        policy = referee.load_policy(name)
        text = render_table(policy, fmt)

        marker = "| " if fmt == "md" else "    <tr>"
        rows = [line for line in text.splitlines() if line.startswith(marker)]
        assert len(policy.rules) + 1 == len(rows)

    def test_md_escape_joins_lines(self):
        """
        A cell stays on one line.
        """
        assert "a b" == md_escape("a\n  b")


class TestCli:
    def test_table(self, capsys):
        """
        `referee table` prints the Markdown table.
        """
        assert 0 == main(["table", "enrow"])

        out = capsys.readouterr().out
        assert render_table(referee.load_policy("enrow")) == out

    def test_html(self, capsys):
        """
        `--format html` prints HTML.
        """
        assert 0 == main(["table", "http-default", "--format", "html"])

        assert capsys.readouterr().out.startswith("<h2>http-default</h2>")

    def test_broken_policy(self, capsys, tmp_path):
        """
        A policy that does not load prints its problems and exits 1.
        """
        path = tmp_path / "bad.yaml"
        path.write_text("policy: bad\nrules: 3\n")

        assert 1 == main(["table", str(path)])

        captured = capsys.readouterr()
        assert "" == captured.out
        assert "bad.yaml" in captured.err
