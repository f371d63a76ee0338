"""
The docs hold what the code does: every policy in the tutorial and the
cookbook loads, the generated pages (the reference, the bundled
policies, the changelog) are what `python3 dev.py docs` makes today, and
the `referee simulate` samples of the tutorial and of the cookbook (the
bundled vendor policies at work) print what the command prints.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import httpx
import pytest
import yaml

import referee
from referee._core.errors import _REGISTRY
from referee._tools.docs import (
    COMMAND,
    keys_from_json_schema,
    render_reference,
    replace_regions,
    stale_pages,
    write_pages,
)
from referee._tools.docs import main as docs_main
from referee._tools.jsonschema import policy_schema
from referee.cli import main as cli_main
from referee.httpx import PolicyTransport
from referee.testing import Reply, simulate


DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ("cookbook.md", "tutorial.md")
_BLOCK = re.compile(r"^```yaml\n(.*?)^```", re.MULTILINE | re.DOTALL)


def policy_blocks() -> list[tuple[str, str]]:
    """
    ``(id, text)`` of each ```yaml block of the pages that starts with
    ``policy:``.
    """
    found = []
    for page in PAGES:
        text = (DOCS / page).read_text(encoding="utf-8")
        for match in _BLOCK.finditer(text):
            block = match.group(1)
            if block.startswith("policy:"):
                line = text.count("\n", 0, match.start()) + 2
                found.append((f"{page}:{line}", block))
    return found


BLOCKS = policy_blocks()


class TestDocPolicies:
    def test_pages_have_policies(self):
        """
        Both pages hold policy blocks, so the test below tests something.
        """
        pages = {block_id.split(":")[0] for block_id, _ in BLOCKS}

        assert set(PAGES) == pages

    @pytest.mark.parametrize(
        "text", [t for _, t in BLOCKS], ids=[i for i, _ in BLOCKS]
    )
    def test_policy_loads(self, text):
        """
        The block loads as a policy, with rules of its own.
        """
        policy = referee.load_policy_text(text, source="docs")

        assert policy.rules
        assert text.split()[1] == policy.name


# -- the generated pages ------------------------------------------------------

ROOT = DOCS.parent
STALE = (
    "{pages} out of date: the code changed what they show.  Regenerate "
    f"them with `{COMMAND}` (python -m referee._tools.docs) and commit the "
    "result."
)


def copy_repo(tmp_path: Path) -> Path:
    """
    A copy of the repository's generated pages and their sources.
    """
    (tmp_path / "docs").mkdir()
    for name in ("reference.md", "policies.md", "changelog.md"):
        shutil.copy(DOCS / name, tmp_path / "docs" / name)
    shutil.copy(ROOT / "CHANGELOG.md", tmp_path / "CHANGELOG.md")
    return tmp_path


class TestGeneratedPages:
    def test_pages_are_current(self, monkeypatch):
        """
        docs/reference.md, docs/policies.md and docs/changelog.md hold what
        the generator makes from the code today.
        """
        monkeypatch.delenv("REFEREE_POLICY_PATH", raising=False)
        stale = [str(p.relative_to(ROOT)) for p in stale_pages(ROOT)]

        assert [] == stale, STALE.format(pages=", ".join(stale))

    def test_no_bare_angle_brackets(self):
        """
        A description that writes ``<path>`` is escaped in the reference:
        a browser would take it for an HTML tag and show nothing.
        """
        text = render_reference()
        outside_code = re.sub(r"`[^`]*`", "", text)

        assert "{body.&lt;path&gt;}" in text
        assert "<" not in outside_code

    @pytest.mark.parametrize(
        ("page", "name", "sign"),
        [
            ("reference.md", "reference", "| `rules[].when.status` |"),
            ("policies.md", "policies", "## http-default"),
        ],
    )
    def test_page_has_its_region(self, page, name, sign):
        """
        Each page has one generated region, and it is filled: a page whose
        markers were lost would otherwise count as current.
        """
        text = (DOCS / page).read_text(encoding="utf-8")
        begin = f"<!-- begin generated: {name} ({COMMAND}) -->"
        end = f"<!-- end generated: {name} -->"

        assert 1 == text.count(begin)
        assert 1 == text.count(end)
        assert sign in text[text.index(begin) : text.index(end)]

    def test_changelog_is_the_changelog(self):
        """
        The site's changelog page is CHANGELOG.md, byte for byte.
        """
        assert (ROOT / "CHANGELOG.md").read_bytes() == (
            DOCS / "changelog.md"
        ).read_bytes()

    def test_changelog_in_nav(self):
        """
        The changelog page is in the site's navigation.
        """
        config = yaml.safe_load((ROOT / "mkdocs.yml").read_text("utf-8"))

        assert {"Changelog": "changelog.md"} in config["nav"]

    def test_stale_region_is_found_and_rewritten(self, tmp_path):
        """
        An edited region is reported, and regenerating it restores the
        generated text and keeps the hand-written prose around it.
        """
        root = copy_repo(tmp_path)
        page = root / "docs" / "reference.md"
        original = page.read_text(encoding="utf-8")
        page.write_text(
            original.replace("| `policy` |", "| `polisy` |", 1)
            .replace("This page lists", "This page, edited by hand, lists")
            .replace("\n| `rules[].do` |", "\n| `rules[].dont` |"),
            encoding="utf-8",
        )
        (root / "CHANGELOG.md").write_text("# Changelog\n", encoding="utf-8")

        assert [page, root / "docs" / "changelog.md"] == stale_pages(root)

        written = write_pages(root)
        text = page.read_text(encoding="utf-8")

        assert [page, root / "docs" / "changelog.md"] == written
        assert [] == stale_pages(root)
        assert (
            original.replace(
                "This page lists", "This page, edited by hand, lists"
            )
            == text
        )
        assert "# Changelog\n" == (root / "docs" / "changelog.md").read_text(
            encoding="utf-8"
        )

    def test_regeneration_is_idempotent(self, tmp_path):
        """
        Regenerating current pages writes nothing.
        """
        root = copy_repo(tmp_path)

        assert [] == write_pages(root)

    def test_command_line(self, tmp_path, capsys, monkeypatch):
        """
        --check reports a stale page with the command and exits 1; without
        it the page is rewritten; a directory without docs/ is refused.
        """
        root = copy_repo(tmp_path)
        page = root / "docs" / "policies.md"
        # A folder that shadows a bundled name is not read.
        shadow = tmp_path / "shadow"
        shadow.mkdir()
        (shadow / "enrow.yaml").write_text(
            "policy: enrow\nrules: [{id: mine, do: accept}]\n",
            encoding="utf-8",
        )
        monkeypatch.setenv("REFEREE_POLICY_PATH", str(shadow))
        page.write_text(
            page.read_text(encoding="utf-8").replace("## enrow", "## e"),
            encoding="utf-8",
        )

        assert 1 == docs_main(["--check", "--root", str(root)])
        assert (
            f"docs/policies.md: out of date; run {COMMAND}\n"
            == capsys.readouterr().out
        )
        assert 0 == docs_main(["--root", str(root)])
        assert "docs/policies.md: regenerated\n" == capsys.readouterr().out
        assert (DOCS / "policies.md").read_text(
            encoding="utf-8"
        ) == page.read_text(encoding="utf-8")
        assert 0 == docs_main(["--check", "--root", str(root)])
        assert 2 == docs_main(["--root", str(tmp_path / "nowhere")])

    def test_unknown_region(self):
        """
        A region no generator knows is an error, not left as it is.
        """
        text = (
            "<!-- begin generated: nope -->\nx\n<!-- end generated: nope -->"
        )

        with pytest.raises(ValueError, match="no generator for the region"):
            replace_regions(text, {"reference": lambda: "y"})

    def test_registered_errors_do_not_show(self, monkeypatch):
        """
        The reference lists the built-in errors only: an error registered
        by whoever runs the generator (a test, an application) leaves it
        unchanged.
        """
        before = render_reference()

        class AddedInATest(referee.Aborted):
            pass

        monkeypatch.setitem(_REGISTRY, "AddedInATest", AddedInATest)

        assert "AddedInATest" in json.dumps(policy_schema())
        assert before == render_reference()


# -- every construct, described -----------------------------------------------


def schema_properties(node, path="$"):
    """
    ``(path, schema)`` of every property anywhere in *node*.
    """
    if isinstance(node, dict):
        for name, child in node.get("properties", {}).items():
            yield f"{path}.{name}", child
        for key, child in node.items():
            yield from schema_properties(child, f"{path}/{key}")
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield from schema_properties(child, f"{path}[{i}]")


class TestEveryConstruct:
    def test_every_schema_property_has_a_description(self):
        """
        Every property of the JSON Schema, wherever it sits, has a
        description of its own: what an editor shows on completion.
        """
        found = list(schema_properties(policy_schema()))
        missing = [p for p, child in found if not child.get("description")]

        assert len(found) > 100
        assert [] == missing, (
            "add these to _DOCS in src/referee/_tools/jsonschema.py"
        )

    def test_every_key_in_the_reference_is_described(self):
        """
        No row of the generated reference has an empty description.
        """
        keys = keys_from_json_schema(policy_schema())

        assert [] == [k.path for k in keys if not k.description]

    def test_every_schema_property_is_in_the_reference(self):
        """
        Each property name of the schema is the last part of some path of
        the reference: no construct is left out of the page.
        """
        names = {
            p.rsplit(".", 1)[1] for p, _ in schema_properties(policy_schema())
        }
        listed = {
            k.path.rsplit(".", 1)[-1]
            for k in keys_from_json_schema(policy_schema())
        }

        assert set() == names - listed

    @pytest.mark.parametrize(
        "path",
        [
            "errors.<name>.base",
            "errors.<name>.description",
            "idempotency.header",
            "idempotency.mint",
            "idempotency.methods",
            "rules[].when.request_headers",
            "rules[].retry.attempts",
            "rules[].retry.deadline",
            "rules[].retry.server_delay.max",
            "rules[].retry.server_delay.on_exceed",
            "rules[].retry.delay_min",
        ],
    )
    def test_recent_constructs(self, path):
        """
        The constructs added lately are in the reference page, described.
        """
        text = (DOCS / "reference.md").read_text(encoding="utf-8")
        row = next(
            (
                line
                for line in text.splitlines()
                if line.startswith(f"| `{path}` |")
            ),
            None,
        )

        assert row is not None
        assert row.rstrip("| ").split("|")[-1].strip()


# -- the tutorial's examples ---------------------------------------------------

_SIMULATE = re.compile(
    r"^```console\n\$ (referee simulate [^\n]*)\n(.*?)^```",
    re.MULTILINE | re.DOTALL,
)


def page_files(page: str) -> dict[str, str]:
    """
    The files a page asks the reader to save, by name: each policy block
    as ``<policy>.yaml``, each block that opens with ``# <name>.yaml:``
    as that name.
    """
    text = (DOCS / page).read_text(encoding="utf-8")
    files = {}
    for block in _BLOCK.findall(text):
        named = re.match(r"# ([\w.-]+\.yaml):", block)
        if block.startswith("policy:"):
            files[f"{block.split()[1]}.yaml"] = block
        elif named:
            files[named.group(1)] = block
    return files


class TestTutorialExamples:
    def test_vendor_examples_are_there(self):
        """
        The tutorial has the GitHub and Stripe policies and the scripts
        its runs use, so the tests below have them to check.
        """
        files = page_files("tutorial.md")

        assert {
            "github.yaml",
            "busy.yaml",
            "stripe.yaml",
            "charge.yaml",
        } <= set(files)

    def test_simulate_samples_print_what_they_show(
        self, tmp_path, monkeypatch, capsys
    ):
        """
        Every `referee simulate` run shown in the tutorial prints, today,
        the output shown under it, for the files the page has the reader
        save.
        """
        text = (DOCS / "tutorial.md").read_text(encoding="utf-8")
        for name, block in page_files("tutorial.md").items():
            (tmp_path / name).write_text(block, encoding="utf-8")
        monkeypatch.chdir(tmp_path)
        samples = _SIMULATE.findall(text)
        commands = " ".join(command for command, _ in samples)

        assert "github.yaml busy.yaml" in commands
        assert "github.yaml --url" in commands
        assert "stripe.yaml charge.yaml" in commands
        for command, shown in samples:
            code = cli_main(shlex.split(command)[1:])

            assert (0, shown) == (code, capsys.readouterr().out), command

    def test_github_rules(self):
        """
        The GitHub policy: the limits and the poll are its own rules, the
        primary limit with its own deadline and ceiling, the secondary
        with a floor.
        """
        policy = referee.load_policy_text(
            page_files("tutorial.md")["github.yaml"], source="github.yaml"
        )
        run = simulate(
            policy,
            [{"status": 403, "headers": {"retry-after": "5"}}, 200],
        )

        assert [60.0] == [s.decision.delay for s in run.steps[:1]]
        assert "secondary-rate-limit" == run.steps[0].decision.rule_id

    def test_stripe_over_http(self, referee_server, referee_no_sleep):
        """
        The Stripe policy over loopback HTTP: a POST is retried after a
        lock timeout with the key minted for the call, the same on both
        sends, and a declined card raises the declared CardError, a
        BadRequest, with Stripe's body.
        """
        policy = referee.load_policy_text(
            page_files("tutorial.md")["stripe.yaml"], source="stripe.yaml"
        )
        declined = {"error": {"type": "card_error", "decline_code": "x"}}
        referee_server.script(
            "/v1/payment_intents/pi_42/confirm",
            [
                Reply(429, body={"error": {"code": "lock_timeout"}}),
                Reply(402, body=declined),
            ],
        )
        with (
            httpx.Client(transport=PolicyTransport(policy)) as client,
            pytest.raises(policy.errors["CardError"]) as ei,
        ):
            client.post(
                referee_server.url("/v1/payment_intents/pi_42/confirm")
            )
        keys = {
            r.headers.get("idempotency-key") for r in referee_server.requests
        }

        assert isinstance(ei.value, referee.BadRequest)
        assert declined == json.loads(ei.value.body)
        assert 2 == len(referee_server.requests)
        assert 1 == len(keys)
        assert None not in keys
        assert 1 == len(referee_no_sleep.delays)


# -- the cookbook's bundled vendor policies ------------------------------------


class TestCookbookSimulations:
    def test_there_are_samples(self):
        """
        The cookbook shows the bundled anthropic, stripe and github
        policies at work, so the test below tests something.
        """
        text = (DOCS / "cookbook.md").read_text(encoding="utf-8")
        policies = {shlex.split(c)[2] for c, _ in _SIMULATE.findall(text)}

        assert {"anthropic", "stripe", "github"} <= policies

    def test_samples_print_what_they_show(self, tmp_path, monkeypatch, capsys):
        """
        Every `referee simulate` run shown in the cookbook prints, today,
        the output shown under it, for the scripts the page shows.
        """
        text = (DOCS / "cookbook.md").read_text(encoding="utf-8")
        for name, block in page_files("cookbook.md").items():
            (tmp_path / name).write_text(block, encoding="utf-8")
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("REFEREE_POLICY_PATH", raising=False)
        for command, shown in _SIMULATE.findall(text):
            code = cli_main(shlex.split(command)[1:])

            assert (0, shown) == (code, capsys.readouterr().out), command
