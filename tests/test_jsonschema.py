import json
import tomllib
from importlib import resources
from pathlib import Path

import jsonschema
import pytest
import yaml

import referee
from referee._core.errors import BUILTIN_ERRORS
from referee._files.load import policies_folder
from referee._tools.jsonschema import DIALECT, policy_schema
from referee.cli import main


BROKEN = Path(__file__).parent / "broken"
SCHEMA_FILE = resources.files("referee") / "policy.schema.json"
BUILTIN_NAMES = [c.__name__ for c in BUILTIN_ERRORS]
REGENERATE = (
    "src/referee/policy.schema.json is out of date; regenerate it with "
    "`.venv/bin/python -m referee schema > src/referee/policy.schema.json`"
)

#: Broken files whose problems the schema cannot express, and why.  Every
#: other file of tests/broken must fail the schema.
EXEMPT = {
    "bad-regex.yaml": "regex errors: the schema does not compile patterns",
    "regex-not-re2.yaml": "patterns RE2 refuses: the schema does not compile them",
    "bad-templates.yaml": "unknown template fields",
    "billion-laughs-keys.yaml": "does not parse (unhashable YAML keys)",
    "cycle-a.yaml": "extends cycle",
    "cycle-b.yaml": "extends cycle",
    "duplicate-ids.yaml": "duplicate rule ids",
    "duplicate-yaml-key.yaml": "duplicate keys: yaml.safe_load keeps one",
    "error-on-accept.yaml": "error: on an accept rule (another action's)",
    "extends-broken.yaml": "the problem is in the extended file",
    "extends-missing-file.yaml": "extends a file that does not exist",
    "extends-missing.yaml": "extends a bundled name that does not exist",
    "json-duplicate-key.json": "duplicate keys: json.loads keeps one",
    "json-duplicate-nested.json": "duplicate keys: json.loads keeps one",
    "json-syntax.json": "does not parse",
    "multi-document.yaml": "does not parse (two YAML documents)",
    "python-tag-mapping.yaml": "does not parse (python tags)",
    "python-tag-scalar.yaml": "does not parse (python tags)",
    "python-tag.yaml": "does not parse (python tags)",
    "settings-of-another-action.yaml": "settings of another action",
    "toml-duplicate-key.toml": "does not parse",
    "toml-syntax.toml": "does not parse",
    "unknown-error.yaml": "error names: a file may declare its own under "
    "errors:, so the schema takes any name",
    "yaml-syntax.yaml": "does not parse",
}

_UNPARSED = object()


def parse(path):
    """
    The document in *path*, as the plain parsers read it, or _UNPARSED.
    """
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            return json.loads(text)
        if path.suffix == ".toml":
            return tomllib.loads(text)
        return yaml.safe_load(text)
    except (ValueError, yaml.YAMLError):
        return _UNPARSED


def broken_files():
    return sorted(
        p for p in BROKEN.iterdir() if p.suffix in {".yaml", ".json", ".toml"}
    )


@pytest.fixture(scope="module")
def validator():
    return jsonschema.Draft202012Validator(policy_schema(BUILTIN_NAMES))


def first_error(validator, data):
    # The first error, not best_match: billion-laughs.yaml must not be
    # walked to the end.
    return next(validator.iter_errors(data), None)


class TestSchemaFile:
    def test_up_to_date(self):
        """
        The shipped policy.schema.json is the generator's output.
        """
        expected = json.dumps(policy_schema(BUILTIN_NAMES), indent=2) + "\n"

        assert expected == SCHEMA_FILE.read_text(encoding="utf-8"), REGENERATE

    def test_is_a_valid_schema(self):
        """
        The schema is a valid draft 2020-12 schema.
        """
        schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))

        jsonschema.Draft202012Validator.check_schema(schema)
        assert DIALECT == schema["$schema"]

    def test_cli_prints_it(self, capsys):
        """
        `referee schema` prints the schema of the errors registered now.
        """
        assert 0 == main(["schema"])

        out = capsys.readouterr().out
        assert policy_schema() == json.loads(out)


class TestGenerator:
    def test_every_object_is_closed_and_titled(self):
        """
        Every object schema has a title and forbids unknown keys.
        """
        schema = policy_schema(BUILTIN_NAMES)
        objects = [schema, *schema["$defs"].values()]
        objects = [o for o in objects if "properties" in o]

        assert all(o["additionalProperties"] is False for o in objects)
        assert all(o.get("title") for o in objects)

    def test_renamed_key(self):
        """
        ConditionDoc.not_ is the key `not`, and refers to the condition.
        """
        cond = policy_schema(BUILTIN_NAMES)["$defs"]["ConditionDoc"]

        assert "not" in cond["properties"]
        assert "not_" not in cond["properties"]
        assert {"$ref": "#/$defs/ConditionDoc"} in cond["properties"]["not"][
            "anyOf"
        ]

    def test_required(self):
        """
        Fields without defaults are required.
        """
        defs = policy_schema(BUILTIN_NAMES)["$defs"]

        assert ["policy"] == policy_schema(BUILTIN_NAMES)["required"]
        assert ["do"] == defs["RuleDoc"]["required"]
        assert ["name", "open_for"] == defs["BreakerDoc"]["required"]

    def test_words(self):
        """
        A word field takes the words of its (class, field).
        """
        rule = policy_schema(BUILTIN_NAMES)["$defs"]["RuleDoc"]

        assert ["accept", "retry", "poll", "abort"] == rule["properties"][
            "do"
        ]["enum"]

    def test_registered_errors(self):
        """
        The error enum is what is registered when the schema is made.
        """
        schema = policy_schema(["Aborted", "Custom"])

        assert ["Aborted", "Custom"] == (
            schema["$defs"]["ErrorName"]["anyOf"][0]["enum"]
        )


def rule(**when):
    return {"policy": "p", "rules": [{"do": "retry", "when": when}]}


class TestValues:
    @pytest.mark.parametrize(
        ("when", "valid"),
        [
            ({"status": 429}, True),
            ({"status": "5xx"}, True),
            ({"status": "500-599"}, True),
            ({"status": "503"}, True),
            ({"status": [429, "5xx"]}, True),
            ({"status": 600}, False),
            ({"status": "6xx"}, False),
            ({"status": []}, False),
            ({"status": True}, False),
            ({"method": ["GET", "post"]}, True),
            ({"method": "GET POST"}, False),
            ({"failure": ["connect", "timeout"]}, True),
            ({"failure": "conect"}, False),
            ({"attempt": {"gte": 3}}, True),
            ({"attempt": "third"}, False),
            ({"body": {"a.b": {"equals": 1, "in": [1]}}}, False),
            ({"body": {"a.b": [1, "x", None]}}, True),
            ({"headers": {"X": {"matches": "^a"}}}, True),
            ({"not": {"any": [{"status": 429}]}}, True),
        ],
        ids=lambda v: json.dumps(v) if isinstance(v, dict) else str(v),
    )
    def test_conditions(self, validator, when, valid):
        """
        Condition values are accepted as the loader accepts them.
        """
        assert valid == validator.is_valid(rule(**when))

    @pytest.mark.parametrize(
        ("value", "valid"),
        [
            (1.5, True),
            ("250ms", True),
            ("1m30s", True),
            ("2.5", True),
            (-1, False),
            ("5 minutes", False),
            ("none", True),
        ],
        ids=str,
    )
    def test_durations(self, validator, value, valid):
        """
        The deadline takes durations and 'none'.
        """
        doc = {"policy": "p", "defaults": {"deadline": value}}

        assert valid == validator.is_valid(doc)

    @pytest.mark.parametrize(
        ("value", "valid"),
        [
            (["Retry-After", "X-Reset:epoch", "retry-after-ms"], True),
            (["X-Reset:epoc"], False),
            (["X-Reset: duration "], True),
        ],
        ids=["plain", "typo", "spaces"],
    )
    def test_delay_from(self, validator, value, valid):
        """
        Server hints name a header and optionally a known format.
        """
        doc = {"policy": "p", "defaults": {"retry": {"delay_from": value}}}

        assert valid == validator.is_valid(doc)

    def test_null_is_not_set(self, validator):
        """
        An explicit null leaves an optional key unset, as in the loader.
        """
        doc = {"policy": "p", "description": None, "defaults": None}

        assert validator.is_valid(doc)
        assert referee.load_policy_text(yaml.safe_dump(doc), fmt="yaml")


class TestBundled:
    @pytest.mark.parametrize("name", referee.bundled_names())
    def test_validates(self, validator, name):
        """
        Every bundled policy validates against the schema.
        """
        path = policies_folder() / f"{name}.yaml"
        data = yaml.safe_load(path.read_text(encoding="utf-8"))

        assert [] == [e.message for e in validator.iter_errors(data)]

    @pytest.mark.parametrize("name", referee.bundled_names())
    def test_names_the_schema(self, name):
        """
        Every bundled policy points editors at the schema on its first line.
        """
        path = policies_folder() / f"{name}.yaml"
        first = path.read_text(encoding="utf-8").splitlines()[0]

        assert "# yaml-language-server: $schema=../policy.schema.json" == (
            first
        )


class TestBrokenCorpus:
    @pytest.mark.parametrize("path", broken_files(), ids=lambda p: p.name)
    def test_loader_and_schema_agree(self, validator, path):
        """
        A broken file fails the schema, unless it is exempt; an exempt one
        is exempt for a reason: it does not parse, or it is structurally
        valid.
        """
        data = parse(path)
        error = None if data is _UNPARSED else first_error(validator, data)

        with pytest.raises(referee.PolicyError):
            referee.load_policy(str(path))
        if path.name in EXEMPT:
            assert data is _UNPARSED or error is None, EXEMPT[path.name]
        else:
            assert error is not None, f"{path.name} passes the schema"

    def test_exempt_files_exist(self):
        """
        Every exemption names a file of the corpus.
        """
        names = {p.name for p in broken_files()}

        assert [] == sorted(set(EXEMPT) - names)
