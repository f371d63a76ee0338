"""
Errors a policy file declares under ``errors:``: the classes, where their
names resolve (per policy, along the ``extends`` chain), the loader's
problems, the engine, a real client, ``simulate`` and the CLI.
"""

from __future__ import annotations

import json
import sys
import traceback

import httpx
import pytest
from tests.server import Reply, ScriptedServer

import referee
from referee import AttemptState, Snapshot, decide, load_policy_text
from referee._core import errors as _errors
from referee.cli import main
from referee.httpx import PolicyTransport
from referee.testing import no_sleep, simulate


STRIPE = """\
policy: stripe
errors:
  CardError:
    base: BadRequest
    description: The card was declined.
  FraudSuspected: {base: CardError, description: Blocked as fraudulent.}
  Overloaded: {base: ServerError}
rules:
  - id: fraud
    when: {status: 402, body: {error.decline_code: fraudulent}}
    do: abort
    error: FraudSuspected
  - id: card-declined
    when: {status: 402}
    do: abort
    error: CardError
  - id: overloaded
    when: {status: 529}
    do: retry
    retry: {attempts: 2, backoff: {initial: 1s, jitter: none}}
    error: Overloaded
"""


def stripe() -> referee.Policy:
    return load_policy_text(STRIPE, source="stripe.yaml")


def problems(text: str, **kwargs: object) -> list[str]:
    """
    The problems of a policy that must not load, as strings.
    """
    with pytest.raises(referee.PolicyError) as exc_info:
        load_policy_text(text, source="p.yaml", **kwargs)  # type: ignore[arg-type]
    return [str(p) for p in exc_info.value.problems]


@pytest.fixture
def registry(monkeypatch):
    """
    A private copy of the error registry, so registrations do not leak.
    """
    monkeypatch.setattr(_errors, "_REGISTRY", dict(_errors._REGISTRY))


class TestClasses:
    def test_subclass_of_base_and_aborted(self):
        """
        A declared class extends its base, and so referee.Aborted.
        """
        card = stripe().errors["CardError"]

        assert issubclass(card, referee.BadRequest)
        assert issubclass(card, referee.Aborted)
        assert issubclass(card, referee.RefereeError)

    def test_name_doc_and_policy(self):
        """
        The class carries its name, its description and its policy.
        """
        card = stripe().errors["CardError"]

        assert (
            "CardError",
            "CardError",
            "The card was declined.",
            "stripe",
        ) == (card.__name__, card.__qualname__, card.__doc__, card.policy)

    def test_declared_base(self):
        """
        A declaration may extend another declared in the same file,
        whatever their order.
        """
        errors = stripe().errors

        assert issubclass(errors["FraudSuspected"], errors["CardError"])

    def test_errors_is_what_the_file_declares(self):
        """
        policy.errors holds the declared classes only, and is read-only.
        """
        errors = stripe().errors

        assert ["CardError", "FraudSuspected", "Overloaded"] == sorted(errors)
        with pytest.raises(TypeError):
            errors["Other"] = referee.BadRequest  # type: ignore[index]

    def test_none_declared(self):
        """
        A policy that declares nothing has an empty errors mapping.
        """
        assert {} == dict(referee.load_policy("http-default").errors)

    def test_rules_use_the_declared_class(self):
        """
        error: CardError in a rule is the class of policy.errors.
        """
        policy = stripe()

        assert policy.errors["CardError"] is policy.rule("card-declined").error

    def test_loading_again_gives_the_same_class(self):
        """
        The same declaration loaded again (a second load, a reload) is the
        same class, so an except written against the first still catches.
        """
        assert stripe().errors["CardError"] is stripe().errors["CardError"]

    def test_not_registered(self):
        """
        A declared name does not leak into the process-wide registry.
        """
        stripe()

        assert _errors.error_class("CardError") is None
        assert "CardError" not in _errors.registered_errors()

    def test_two_policies_two_classes(self):
        """
        Two policies may declare different CardErrors; each keeps its own.
        """
        other = load_policy_text(
            STRIPE.replace("policy: stripe", "policy: adyen").replace(
                "base: BadRequest", "base: PermissionDenied"
            ),
            source="adyen.yaml",
        )
        mine = stripe()

        assert mine.errors["CardError"] is not other.errors["CardError"]
        assert issubclass(other.errors["CardError"], referee.PermissionDenied)
        assert not issubclass(
            mine.errors["CardError"], referee.PermissionDenied
        )

    def test_declared_hides_registered(self, registry):
        """
        A declared name hides a registered class of that name, in its own
        policy only.
        """

        class CardError(referee.Aborted):
            pass

        referee.register_error(CardError)
        declared = stripe()
        plain = load_policy_text(
            "policy: plain\nrules:\n"
            "  - {id: c, when: {status: 402}, do: abort, error: CardError}\n"
        )

        assert CardError is not declared.rule("card-declined").error
        assert CardError is plain.rule("c").error

    def test_registered_base(self, registry):
        """
        A declared class may extend a registered one.
        """

        class PaymentError(referee.Aborted):
            pass

        referee.register_error(PaymentError)
        policy = load_policy_text(
            "policy: p\nerrors:\n  CardError: {base: PaymentError}\n"
        )

        assert issubclass(policy.errors["CardError"], PaymentError)

    @pytest.mark.parametrize(
        ("fmt", "text"),
        [
            (
                "toml",
                (
                    'policy = "t"\n[errors.CardError]\nbase = "BadRequest"\n'
                    '[[rules]]\ndo = "abort"\nerror = "CardError"\n'
                ),
            ),
            (
                "json",
                (
                    '{"policy": "j", "errors": {"CardError": {"base": '
                    '"BadRequest"}}, "rules": [{"do": "abort", "error": '
                    '"CardError"}]}'
                ),
            ),
        ],
        ids=["toml", "json"],
    )
    def test_toml_and_json(self, fmt, text):
        """
        TOML and JSON declare errors the same way.
        """
        policy = load_policy_text(text, fmt=fmt)

        assert issubclass(policy.rules[0].error, referee.BadRequest)  # type: ignore[arg-type]


class TestExtends:
    @pytest.fixture
    def parent(self, tmp_path, monkeypatch):
        """
        parent.yaml, declaring CardError, in the current directory.
        """
        monkeypatch.chdir(tmp_path)
        (tmp_path / "parent.yaml").write_text(
            "policy: parent\n"
            "errors:\n"
            "  CardError: {base: BadRequest}\n"
            "rules:\n"
            "  - {id: card, when: {status: 402}, do: abort, error: CardError}\n"
        )

    def test_child_names_the_parents_error(self, parent):
        """
        A policy may name an error declared by a policy it extends.
        """
        policy = load_policy_text(
            "policy: child\nextends: parent.yaml\nrules:\n"
            "  - {id: c, when: {status: 400}, do: abort, error: CardError}\n"
        )

        assert policy.errors["CardError"] is policy.rule("c").error
        assert policy.rule("card").error is policy.rule("c").error

    def test_child_extends_the_parents_error(self, parent):
        """
        A declaration may take a base from a policy it extends.
        """
        policy = load_policy_text(
            "policy: child\nextends: parent.yaml\nerrors:\n"
            "  Declined: {base: CardError}\n"
        )

        assert issubclass(
            policy.errors["Declined"], policy.errors["CardError"]
        )

    def test_parent_does_not_see_the_childs(self, tmp_path, parent, registry):
        """
        A parent's rules resolve in the parent: a name the child declares
        does not change what the parent's rules raise.
        """

        class Refused(referee.Aborted):
            pass

        referee.register_error(Refused)
        (tmp_path / "base.yaml").write_text(
            "policy: base\nrules:\n"
            "  - {id: r, when: {status: 403}, do: abort, error: Refused}\n"
        )
        policy = load_policy_text(
            "policy: child\nextends: base.yaml\nerrors:\n"
            "  Refused: {base: BadRequest}\n"
        )

        assert Refused is policy.rule("r").error
        assert Refused is not policy.errors["Refused"]

    def test_unknown_in_child_suggests_the_parents(self, parent):
        """
        A near miss of an inherited name is reported with a did-you-mean.
        """
        (found,) = problems(
            "policy: child\nextends: parent.yaml\nrules:\n"
            "  - {id: c, when: {status: 400}, do: abort, error: CardEror}\n"
        )

        assert found.startswith("p.yaml:4: $.rules[0].error: found 'CardEror'")
        assert "did you mean 'CardError'?" in found

    def test_redeclaring_is_a_problem(self, parent):
        """
        A policy cannot redeclare an error of a policy it extends.
        """
        expected = [
            (
                "p.yaml:4: $.errors.CardError: 'CardError' is declared already "
                "by the policy 'parent', which this one extends; use it as it "
                "is, or declare a new name (base: CardError)"
            )
        ]

        assert expected == problems(
            "policy: child\nextends: parent.yaml\nerrors:\n"
            "  CardError: {base: NotFound}\n"
        )


class TestLoaderErrors:
    @pytest.mark.parametrize(
        "name",
        ["card_error", "cardError", "Card-Error", "Card Error", "None"],
        ids=["snake", "lower-first", "dash", "space", "keyword"],
    )
    def test_bad_names(self, name):
        """
        A declared name must be a CamelCase Python identifier.
        """
        (found,) = problems(
            f"policy: p\nerrors:\n  {name}: {{base: BadRequest}}\n"
        )

        assert "expected a CamelCase Python identifier" in found
        assert found.startswith("p.yaml:3: $.errors")

    @pytest.mark.parametrize(
        "name", ["BadRequest", "Aborted", "RefereeError", "PolicyError"]
    )
    def test_shadowing_a_builtin(self, name):
        """
        A declared name cannot be a built-in error's.
        """
        expected = [
            (
                f"p.yaml:3: $.errors.{name}: {name!r} is a built-in error class; "
                f"a declared error needs a name of its own (and may extend "
                f"{name}: base: {name})"
            )
        ]

        assert expected == problems(
            f"policy: p\nerrors:\n  {name}: {{base: NotFound}}\n"
        )

    def test_unknown_base_did_you_mean(self):
        """
        An unknown base is reported with the names allowed and a guess.
        """
        (found,) = problems(
            "policy: p\nerrors:\n  CardError: {base: BadReqest}\n"
        )

        assert found.startswith(
            "p.yaml:3: $.errors.CardError.base: found 'BadReqest' (a "
            "string); expected a declared, built-in or registered error "
            "class: Aborted, "
        )
        assert "did you mean 'BadRequest'?" in found

    def test_self_cycle(self):
        """
        A declaration that extends itself is a cycle.
        """
        expected = [
            (
                "p.yaml:3: $.errors.Loop.base: the declared errors form a cycle: "
                "Loop -> Loop; one of them must extend a built-in or registered "
                "error (base: BadRequest)"
            )
        ]

        assert expected == problems(
            "policy: p\nerrors:\n  Loop: {base: Loop}\n"
        )

    def test_cycle_is_reported_once(self):
        """
        A cycle of three is one problem, not three.
        """
        found = problems(
            "policy: p\nerrors:\n  A1: {base: B1}\n  B1: {base: C1}\n"
            "  C1: {base: A1}\n"
        )

        assert [
            (
                "p.yaml:3: $.errors.A1.base: the declared errors form a cycle: "
                "A1 -> B1 -> C1 -> A1; one of them must extend a built-in or "
                "registered error (base: BadRequest)"
            )
        ] == found

    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            (
                "  CardError: BadRequest\n",
                (
                    "p.yaml:3: $.errors.CardError: found 'BadRequest' (a string); "
                    "expected a mapping with the keys base, description"
                ),
            ),
            (
                "  CardError: {description: x}\n",
                (
                    "p.yaml:3: $.errors.CardError.base: missing required key "
                    "'base'"
                ),
            ),
            (
                "  CardError: {base: BadRequest, descripton: x}\n",
                (
                    "p.yaml:3: $.errors.CardError.descripton: unknown key "
                    "'descripton'; allowed here: base, description; did you mean "
                    "'description'?"
                ),
            ),
        ],
        ids=["not-a-mapping", "no-base", "unknown-key"],
    )
    def test_structure(self, body, expected):
        """
        A declaration is a mapping with a base and an optional description.
        """
        assert [expected] == problems(f"policy: p\nerrors:\n{body}")

    def test_every_problem_at_once(self):
        """
        Problems of declarations come with the file's other problems, in
        line order.
        """
        found = problems(
            "policy: p\n"
            "errors:\n"
            "  card: {base: BadRequest}\n"
            "rules:\n"
            "  - {id: a, when: {status: 402}, do: abort, error: Nope}\n"
            "  - {id: a, when: {status: 403}, do: abort}\n"
        )

        assert [3, 5, 6] == [int(p.split(":")[1]) for p in found]

    def test_declared_names_known_while_rules_broken(self):
        """
        When a rule does not structure, the others are still checked
        against what errors: declares.
        """
        found = problems(
            "policy: p\nerrors:\n  CardError: {base: BadRequest}\nrules:\n"
            "  - {do: retri, error: CardError}\n"
            "  - {do: abort, error: Nope}\n"
        )

        assert ["$.rules[0].do", "$.rules[1].error"] == [
            f.split(": ")[1] for f in found
        ]

    def test_rule_names_unknown_while_errors_broken(self):
        """
        When errors: does not structure, the rules' names are not called
        unknown as well.
        """
        found = problems(
            "policy: p\nerrors:\n  CardError: 42\nrules:\n"
            "  - {when: {status: 402}, do: abort, error: CardError}\n"
        )

        assert 1 == len(found)
        assert found[0].startswith("p.yaml:3: $.errors.CardError: found 42")


class TestEngine:
    def test_abort_names_the_declared_class(self):
        """
        decide() aborts with the declared class.
        """
        policy = stripe()
        d = decide(
            policy,
            Snapshot.response(
                402, method="POST", url="https://api.stripe.com/"
            ),
            AttemptState(started=0.0),
            now=0.0,
        )

        assert isinstance(d, referee.Abort)
        assert policy.errors["CardError"] is d.error
        assert "CardError" in d.reason

    def test_declared_retry_error_when_retries_run_out(self):
        """
        A retry rule that runs out raises its declared error.
        """
        policy = stripe()
        sim = simulate(policy, [529, 529])

        assert policy.errors["Overloaded"] is sim.decision.error  # type: ignore[union-attr]

    def test_simulate_trail(self):
        """
        simulate shows the declared class on the last step.
        """
        policy = stripe()
        sim = simulate(policy, [402], method="POST")

        assert ["card-declined"] == [s.decision.rule_id for s in sim.steps]
        assert "CardError" == sim.decision.error.__name__  # type: ignore[union-attr]


class TestThroughHttpx:
    def test_catch_the_declared_class(self):
        """
        Through a real client, the call raises the declared class, caught
        by it, by its base and by referee.Aborted, and its name shows in
        the traceback.
        """
        policy = stripe()
        card = policy.errors["CardError"]
        with ScriptedServer() as server:
            server.script(
                "/v1/charges",
                [
                    Reply(
                        402,
                        body={
                            "error": {
                                "type": "card_error",
                                "message": "Your card was declined.",
                            }
                        },
                    )
                ],
            )
            with (
                no_sleep(),
                httpx.Client(transport=PolicyTransport(policy)) as client,
                pytest.raises(card) as exc_info,
            ):
                client.post(server.url("/v1/charges"), content=b"amount=100")

        exc = exc_info.value
        assert isinstance(exc, referee.BadRequest)
        assert isinstance(exc, referee.Aborted)
        assert (402, "card-declined") == (exc.status, exc.rule_id)
        assert "Your card was declined." == exc.detail
        line = traceback.format_exception_only(exc)[-1]
        assert line.startswith("referee.declared.CardError: ")

    def test_subclass_caught_as_declared_base(self):
        """
        A declared error whose base is declared is caught as that base.
        """
        policy = stripe()
        with ScriptedServer() as server:
            server.script(
                "/v1/charges",
                [
                    Reply(
                        402,
                        body={"error": {"decline_code": "fraudulent"}},
                    )
                ],
            )
            with (
                httpx.Client(transport=PolicyTransport(policy)) as client,
                pytest.raises(policy.errors["CardError"]) as exc_info,
            ):
                client.post(server.url("/v1/charges"), content=b"x")

        assert "FraudSuspected" == type(exc_info.value).__name__


class TestCLI:
    @pytest.fixture
    def path(self, tmp_path):
        """
        The Stripe policy, written to a file.
        """
        p = tmp_path / "stripe.yaml"
        p.write_text(STRIPE)
        return str(p)

    def test_check(self, path, capsys):
        """
        referee check passes a file that declares its errors, no Python
        needed.
        """
        code = main(["check", path])

        assert (0, f"{path}: ok, 3 rules\n") == (code, capsys.readouterr().out)

    def test_explain(self, path, capsys):
        """
        referee explain names the declared class.
        """
        code = main(["explain", path, "--status", "402", "--json"])
        out = json.loads(capsys.readouterr().out)

        assert (0, "CardError", "abort") == (code, out["error"], out["action"])

    def test_simulate(self, path, capsys):
        """
        referee simulate runs the retry rule out and ends with its
        declared error.
        """
        code = main(["simulate", path, "--responses", "529,529", "--json"])
        out = json.loads(capsys.readouterr().out)

        assert (0, ["retry", "abort"], "Overloaded") == (
            code,
            [s["action"] for s in out["steps"]],
            out["result"]["error"],
        )

    def test_table(self, path, capsys):
        """
        referee table lists the declared classes with their bases above
        the table, and shows them in the error column.
        """
        assert 0 == main(["table", path])
        out = capsys.readouterr().out
        assert "| CardError |" in out
        assert (
            "- errors: CardError (BadRequest), FraudSuspected (CardError), "
            "Overloaded (ServerError)\n"
        ) in out

    def test_import_registers(self, tmp_path, monkeypatch, capsys, registry):
        """
        --import MODULE imports a module that registers classes, found in
        the current directory; without it the name is unknown.
        """
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "path", list(sys.path))
        (tmp_path / "my_errors_for_cli.py").write_text(
            "import referee\n"
            "class TopUp(referee.Aborted):\n"
            "    pass\n"
            "referee.register_error(TopUp)\n"
        )
        (tmp_path / "p.yaml").write_text(
            "policy: p\nrules:\n"
            "  - {id: t, when: {status: 402}, do: abort, error: TopUp}\n"
        )
        monkeypatch.delitem(sys.modules, "my_errors_for_cli", raising=False)

        without = main(["check", "p.yaml"])
        capsys.readouterr()
        with_import = main(
            [
                "explain",
                "--import",
                "my_errors_for_cli",
                "p.yaml",
                "--status",
                "402",
                "--json",
            ]
        )
        out = json.loads(capsys.readouterr().out)
        sys.modules.pop("my_errors_for_cli", None)

        assert (1, 0, "TopUp") == (without, with_import, out["error"])

    def test_import_failure(self, path, capsys):
        """
        A module that cannot be imported is a usage error (exit 2).
        """
        code = main(["check", "--import", "no_such_module_here", path])

        assert 2 == code
        assert (
            "referee: --import no_such_module_here: ModuleNotFoundError: "
            "No module named 'no_such_module_here'\n"
        ) == capsys.readouterr().err
