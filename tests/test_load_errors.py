"""
The broken-policy corpus: every file in ``tests/broken`` fails to load with
exactly the problems listed here, all of them at once and in document order.

The files are loaded by a name relative to ``tests/broken`` (the tests
``chdir`` there), so the file part of each problem is stable.
"""

import errno
import os
import time
from pathlib import Path

import pytest

import referee
from referee._core import errors as _errors
from referee._files import load as _load


BROKEN = Path(__file__).parent / "broken"

#: Files that are only loaded through another one's ``extends``.
HELPERS = {"broken-parent.yaml", "cycle-b.yaml"}

#: Files whose problem is with the whole document: no line, no path.
WHOLE_DOCUMENT = {"billion-laughs.yaml", "empty.yaml"}

#: Every problem of every broken file, as ``str(problem)``.
EXPECTED = {
    "mixed-phases.yaml": [
        "mixed-phases.yaml:3: $.defaults.retry.attemps: unknown key 'attemps'; allowed here: attempts, backoff, unsafe_methods, delay_from, delay_min; did you mean 'attempts'?",
        "mixed-phases.yaml:8: $.rules[1].id: duplicate rule id 'rate-limited'; $.rules[0] has it already",
    ],
    "attempt-string.yaml": [
        "attempt-string.yaml:4: $.rules[0].when.attempt: found 'third' (a string); expected an attempt number (1 is the first send) or comparisons such as {gte: 3}",
    ],
    "bad-delay-min.yaml": [
        "bad-delay-min.yaml:3: $.defaults.retry.delay_min: found '-5s'; expected a duration: a number of seconds or a string with units such as '250ms', '2s', '10m', '1h', '1m30s' (not negative)",
        "bad-delay-min.yaml:8: $.rules[0].retry.delay_min: found 'forever'; expected a duration: a number of seconds or a string with units such as '250ms', '2s', '10m', '1h', '1m30s' (not negative)",
        "bad-delay-min.yaml:12: $.rules[1].retry.delay_min: found ['60s']; expected a duration: a number of seconds or a string with units such as '250ms', '2s', '10m', '1h', '1m30s' (not negative)",
        "bad-delay-min.yaml:16: $.rules[2].retry.delay: unknown key 'delay'; allowed here: attempts, backoff, unsafe_methods, delay_from, deadline, server_delay, delay_min; did you mean 'delay_from' or 'delay_min'?",
    ],
    "bad-delay-from.yaml": [
        "bad-delay-from.yaml:7: $.rules[0].retry.delay_from[1]: found 'X-Reset:epoc' (a string); expected 'Header-Name' or 'Header-Name:format' with a format among auto, date, delta, duration, epoch, ms, ratelimit, retry-after; did you mean 'epoch'?",
    ],
    "bad-pause.yaml": [
        "bad-pause.yaml:6: $.rules[0].pause.until: missing required key 'until'",
        "bad-pause.yaml:10: $.rules[1].pause.scope: found 'fleet' (a string); expected one of policy, host",
        "bad-pause.yaml:10: $.rules[1].pause.then: found 'sleep' (a string); expected one of wait, fail",
        "bad-pause.yaml:14: $.rules[2].pause.until: found 'X-RateLimit-Reset:epoc' (a string); expected 'Header-Name' or 'Header-Name:format' with a format among auto, date, delta, duration, epoch, ms, ratelimit, retry-after; did you mean 'epoch'?",
        "bad-pause.yaml:18: $.rules[3].pause.until: unknown key 'fmt' in {'header': 'X-RateLimit-Reset', 'fmt': 'epoch'} (a mapping); allowed here: header, format",
        "bad-pause.yaml:22: $.rules[4].pause.max: found 0.0; expected a duration above 0 (the longest pause a header may set)",
        "bad-pause.yaml:22: $.rules[4].pause.for: unknown key 'for'; allowed here: until, scope, then, max, methods",
        "bad-pause.yaml:26: $.rules[5].pause.until: found 42 (an integer); expected 'hint', a header with a format ('X-RateLimit-Reset:epoch' or {header: X-RateLimit-Reset, format: epoch}), or a list of those",
    ],
    "bad-durations.yaml": [
        "bad-durations.yaml:5: $.defaults.retry.backoff.initial: found '5 minutes'; expected a duration: a number of seconds or a string with units such as '250ms', '2s', '10m', '1h', '1m30s' (not negative)",
        "bad-durations.yaml:6: $.defaults.retry.backoff.max: found -1; expected a duration: a number of seconds or a string with units such as '250ms', '2s', '10m', '1h', '1m30s' (not negative)",
        "bad-durations.yaml:7: $.defaults.deadline: found 'forever'; expected a duration: a number of seconds or a string with units such as '250ms', '2s', '10m', '1h', '1m30s' (not negative), or 'none' for no limit",
        "bad-durations.yaml:12: $.rules[0].breaker.open_for: found '1 hour'; expected a duration: a number of seconds or a string with units such as '250ms', '2s', '10m', '1h', '1m30s' (not negative)",
    ],
    "bad-failure.yaml": [
        "bad-failure.yaml:4: $.rules[0].when.failure: found 'conect' (a string); expected one of connect, protocol, read, timeout; did you mean 'connect'?",
    ],
    "bad-methods.yaml": [
        "bad-methods.yaml:4: $.rules[0].when.method: found 'GET POST' (a string); expected an HTTP method name (GET)",
        "bad-methods.yaml:7: $.rules[1].when.method: found 42 (an integer); expected an HTTP method name (GET) or a list of them",
    ],
    "bad-names.yaml": [
        "bad-names.yaml:1: $.policy: found 'my policy!' (a string); expected a name of letters, digits, '-', '_', '.' and ':' (starting with a letter or digit)",
        "bad-names.yaml:3: $.rules[0].id: found '-dash-first' (a string); expected a name of letters, digits, '-', '_', '.' and ':' (starting with a letter or digit)",
    ],
    "one-pass.yaml": [
        "one-pass.yaml:5: $.defaults.retry.attempts: found 0 (an integer); expected a whole number of sends >= 1 (the first send counts), or 'unlimited'",
        "one-pass.yaml:7: $.defaults.poll.request.url: unknown field {tiem} in the template '/jobs/{body.id}?t={tiem}'; expected one of {status}, {method}, {url}, {request.url}, {request.path}, {request.method}, {rule}, {policy}, {failure}, {body.<path>} or {header.<Name>}",
        "one-pass.yaml:12: $.rules[1].id: duplicate rule id 'rate-limited'; $.rules[0] has it already",
        "one-pass.yaml:13: $.rules[1].when.bogus: unknown key 'bogus'; allowed here: status, method, host, path, headers, request_headers, body, failure, attempt, any, all, not",
        "one-pass.yaml:15: $.rules[1].poll: poll settings on a rule that does not poll (do: retry); remove them or set do: poll",
        "one-pass.yaml:16: $.rules[1].alert.message: unknown field {stauts} in the template '{stauts}: down'; expected one of {status}, {method}, {url}, {request.url}, {request.path}, {request.method}, {rule}, {policy}, {failure}, {body.<path>} or {header.<Name>}; did you mean 'status'?",
        "one-pass.yaml:21: $.rules[2].poll.initail: unknown key 'initail'; allowed here: initial, multiplier, max, jitter, deadline, delay_from, request; did you mean 'initial'?",
        "one-pass.yaml:22: $.rules[2].poll.request.url: unknown field {bdy.id} in the template '/jobs/{bdy.id}'; expected one of {status}, {method}, {url}, {request.url}, {request.path}, {request.method}, {rule}, {policy}, {failure}, {body.<path>} or {header.<Name>}",
        "one-pass.yaml:23: $.rules[3].id: found 'bad id!' (a string); expected a name of letters, digits, '-', '_', '.' and ':' (starting with a letter or digit)",
        "one-pass.yaml:28: $.rules[4].do: found 'abort-now' (a string); expected one of accept, retry, poll, abort",
        "one-pass.yaml:30: $.rules[4].alert.message: unknown field {rul} in the template '{rul} ran out'; expected one of {status}, {method}, {url}, {request.url}, {request.path}, {request.method}, {rule}, {policy}, {failure}, {body.<path>} or {header.<Name>}; did you mean 'rule'?",
    ],
    "regex-not-re2.yaml": [
        "regex-not-re2.yaml:6: $.rules[0].when.body.message: 'matches' cannot use the pattern 'quota(?= exceeded)': lookahead (?=...) is not supported: RE2 matches in linear time; match the text itself, or split the rule",
        "regex-not-re2.yaml:9: $.rules[1].when.body.message: 'matches' cannot use the pattern 'quota(?! left)': negative lookahead (?!...) is not supported: RE2 matches in linear time; put the text it excludes in a 'not:' condition",
        "regex-not-re2.yaml:12: $.rules[2].when.body.message: 'matches' cannot use the pattern '(?<=daily )quota': lookbehind (?<=...) is not supported: RE2 matches in linear time; match the text itself, or split the rule",
        "regex-not-re2.yaml:15: $.rules[3].when.body.message: 'matches' cannot use the pattern '(?<!no )credits': negative lookbehind (?<!...) is not supported: RE2 matches in linear time; put the text it excludes in a 'not:' condition",
        "regex-not-re2.yaml:18: $.rules[4].when.body.message: 'matches' cannot use the pattern '(\\\\w+) \\\\1': backreference \\1 is not supported: RE2 matches in linear time; write the repeated text out, or split the rule",
        "regex-not-re2.yaml:21: $.rules[5].when.body.message: 'matches' cannot use the pattern '(?P<w>\\\\w+) (?P=w)': backreference (?P=name) is not supported: RE2 matches in linear time; write the repeated text out, or split the rule",
        "regex-not-re2.yaml:24: $.rules[6].when.body.message: 'matches' cannot use the pattern 'a++b': possessive quantifier ++ is not supported: RE2 matches in linear time and never backtracks; write + alone",
        "regex-not-re2.yaml:27: $.rules[7].when.body.message: 'matches' cannot use the pattern '(?>a+)b': atomic group (?>...) is not supported: RE2 matches in linear time and never backtracks; write (?:...) instead",
        "regex-not-re2.yaml:30: $.rules[8].when.body.message: 'matches' cannot use the pattern '(<)?a(?(1)>)': conditional group (?(...)...) is not supported: RE2 matches in linear time; write one condition per branch under 'any:'",
        "regex-not-re2.yaml:33: $.rules[9].when.headers['X-Reason']: 'matches' cannot use the pattern 'quota\\\\Z': \\Z is not supported: write \\z (the end of the text) or $",
        "regex-not-re2.yaml:36: $.rules[10].when.body.message: 'matches' cannot use the pattern '(?x) quota  # the word': verbose mode (?x) is not supported: write the pattern without spaces or comments",
    ],
    "bad-regex.yaml": [
        "bad-regex.yaml:6: $.rules[0].when.body.message: 'matches' has an invalid regular expression 'quota (exceeded': missing )",
    ],
    "bad-request-headers.yaml": [
        "bad-request-headers.yaml:4: $.rules[0].when.request_headers['Idempotency-Key']: unknown operator 'exsits'; expected exists, equals, in, contains, matches, gt, gte, lt, lte; did you mean 'exists'?",
        "bad-request-headers.yaml:10: $.rules[1].when.request_headers['Idempotency Key']: found the key 'Idempotency Key' (a string); expected a header name of letters, digits and !#$%&'*+.^_`|~- (Idempotency-Key)",
        "bad-request-headers.yaml:11: $.rules[1].when.request_headers['X-Trace:Id']: found the key 'X-Trace:Id' (a string); expected a header name of letters, digits and !#$%&'*+.^_`|~- (Idempotency-Key)",
        "bad-request-headers.yaml:14: $.rules[2].when.request_headers: found {} (a mapping); expected a mapping of header names to value matchers",
        "bad-request-headers.yaml:17: $.rules[3].when.request_headers: found ['Idempotency-Key'] (a list); expected a mapping of header names to value matchers",
        "bad-request-headers.yaml:20: $.rules[4].when.any[0].request_headers['X-Mode']: 'matches' cannot use the pattern '(?=x)': lookahead (?=...) is not supported: RE2 matches in linear time; match the text itself, or split the rule",
    ],
    "bad-statuses.yaml": [
        "bad-statuses.yaml:4: $.rules[0].when.status: found '6xx' (a string); expected a status code from 100 to 599 (429), a class ('5xx'), a range ('500-599'), or a list of those",
        "bad-statuses.yaml:7: $.rules[1].when.status: found 99 (an integer); expected a status code from 100 to 599 (429), a class ('5xx'), a range ('500-599'), or a list of those",
        "bad-statuses.yaml:10: $.rules[2].when.status: found 'abc' (a string); expected a status code from 100 to 599 (429), a class ('5xx'), a range ('500-599'), or a list of those",
        "bad-statuses.yaml:13: $.rules[3].when.status: found '600-700' (a string); expected a status code from 100 to 599 (429), a class ('5xx'), a range ('500-599'), or a list of those",
        "bad-statuses.yaml:16: $.rules[4].when.status: found an empty list; expected a status code from 100 to 599 (429), a class ('5xx'), a range ('500-599'), or a list of those",
    ],
    "bad-templates.yaml": [
        "bad-templates.yaml:7: $.rules[0].poll.request.url: unknown field {bdy.id} in the template '/jobs/{bdy.id}'; expected one of {status}, {method}, {url}, {request.url}, {request.path}, {request.method}, {rule}, {policy}, {failure}, {body.<path>} or {header.<Name>}",
        "bad-templates.yaml:11: $.rules[1].alert.message: unknown field {stauts} in the template '{stauts}: out of credits'; expected one of {status}, {method}, {url}, {request.url}, {request.path}, {request.method}, {rule}, {policy}, {failure}, {body.<path>} or {header.<Name>}; did you mean 'status'?",
    ],
    "bad-value-matchers.yaml": [
        "bad-value-matchers.yaml:6: $.rules[0].when.headers['X-Count']: 'gt' takes a number; found 'many' (a string)",
        "bad-value-matchers.yaml:7: $.rules[0].when.headers['X-Flag']: 'exists' takes true or false; found 'maybe' (a string)",
        "bad-value-matchers.yaml:8: $.rules[0].when.headers['X-Both']: give 'equals' or 'in', not both",
        "bad-value-matchers.yaml:13: $.rules[1].when.body.items: found [['nested']] (a list); a list here must hold one or more plain values (strings, numbers, booleans, null)",
        "bad-value-matchers.yaml:14: $.rules[1].when.body.empty: found {} (a mapping); expected a value, a list of values, or a mapping of operators (exists, equals, in, contains, matches, gt, gte, lt, lte)",
    ],
    "bad-rate-seed.yaml": [
        "bad-rate-seed.yaml:3: $.defaults.rate_limit.seed: found 'RateLimit-Policy' (a string); expected one of ratelimit-policy; did you mean 'ratelimit-policy'?",
    ],
    "bad-words.yaml": [
        "bad-words.yaml:4: $.defaults.retry.backoff.jitter: found 'half' (a string); expected one of full, equal, none",
        "bad-words.yaml:5: $.defaults.body_limit: found '64 kilobytes'; expected a size: a number of bytes or a string such as '64KiB', '1MiB', '500kB'",
        "bad-words.yaml:10: $.rules[0].alert.severity: found 'critcal' (a string); expected one of info, warning, error, critical; did you mean 'critical'?",
        "bad-words.yaml:11: $.rules[0].log: found 'warn' (a string); expected one of debug, info, warning, error; did you mean 'warning'?",
    ],
    "billion-laughs.yaml": [
        "billion-laughs.yaml: the document's aliases (*references to &anchors) expand its 30 nodes past 10120; refusing to load it",
    ],
    "billion-laughs-keys.yaml": [
        "billion-laughs-keys.yaml:2: $: found a list as a key; keys must be strings",
        "billion-laughs-keys.yaml:4: $: found a list as a key; keys must be strings",
        "billion-laughs-keys.yaml:6: $: found a list as a key; keys must be strings",
        "billion-laughs-keys.yaml:8: $: found a list as a key; keys must be strings",
        "billion-laughs-keys.yaml:10: $: found a list as a key; keys must be strings",
        "billion-laughs-keys.yaml:12: $: found a list as a key; keys must be strings",
    ],
    "cycle-a.yaml": [
        "cycle-b.yaml:2: $.extends: extends forms a cycle: cycle-a.yaml -> cycle-b.yaml -> cycle-a.yaml",
    ],
    "declared-errors.yaml": [
        "declared-errors.yaml:3: $.errors.card_error: found the error name 'card_error' (a string); expected a CamelCase Python identifier: a capital letter, then letters and digits (CardError)",
        "declared-errors.yaml:4: $.errors.BadRequest: 'BadRequest' is a built-in error class; a declared error needs a name of its own (and may extend BadRequest: base: BadRequest)",
        "declared-errors.yaml:5: $.errors.LoopA.base: the declared errors form a cycle: LoopA -> LoopB -> LoopA; one of them must extend a built-in or registered error (base: BadRequest)",
        "declared-errors.yaml:7: $.errors.Declined.base: found 'BadRequst' (a string); expected a declared, built-in or registered error class: Aborted, AuthenticationError, BadRequest, CircuitOpen, DeadlineExceeded, Declined, InsufficientCredits, JobFailed, LoopA, LoopB, NotFound, NotReplayable, PermissionDenied, RateLimited, RetriesExhausted, ServerError; did you mean 'BadRequest'? (declare your own under errors:, or register it with referee.register_error)",
        "declared-errors.yaml:12: $.rules[0].error: found 'CardEror' (a string); expected a declared, built-in or registered error class: Aborted, AuthenticationError, BadRequest, CircuitOpen, DeadlineExceeded, Declined, InsufficientCredits, JobFailed, LoopA, LoopB, NotFound, NotReplayable, PermissionDenied, RateLimited, RetriesExhausted, ServerError (declare your own under errors:, or register it with referee.register_error)",
    ],
    "duplicate-ids.yaml": [
        "duplicate-ids.yaml:6: $.rules[1].id: duplicate rule id 'rate-limited'; $.rules[0] has it already",
        "duplicate-ids.yaml:12: $.rules[3]: duplicate rule id 'rule-4'; $.rules[2] has it already",
    ],
    "duplicate-yaml-key.yaml": [
        "duplicate-yaml-key.yaml:6: $.rules[0].do: duplicate key 'do'; it is already given on line 5",
    ],
    "empty.yaml": [
        "empty.yaml: empty; a policy is a mapping with the keys policy, description, extends, defaults, alerts, redact, errors, rules",
    ],
    "error-on-accept.yaml": [
        "error-on-accept.yaml:6: $.rules[0].error: an accept rule raises no error; remove error: or set do: abort",
    ],
    "extends-broken.yaml": [
        "broken-parent.yaml:4: $.defaults.retry.attempts: found 0 (an integer); expected a whole number of sends >= 1 (the first send counts), or 'unlimited'",
    ],
    "extends-missing.yaml": [
        f"extends-missing.yaml:2: $.extends: there is no bundled policy named 'http-defualt'; bundled: {', '.join(referee.bundled_names())}; did you mean 'http-default'? (a path needs a suffix: .yaml, .yml, .toml, .json)",
    ],
    "extends-missing-file.yaml": [
        f"extends-missing-file.yaml:2: $.extends: cannot read the policy file 'no-such-parent.yaml': {os.strerror(errno.ENOENT)}",
    ],
    "json-duplicate-key.json": [
        "json-duplicate-key.json: $.policy: duplicate key 'policy'",
    ],
    "json-duplicate-nested.json": [
        "json-duplicate-nested.json: $.rules[0].do: duplicate key 'do'",
        "json-duplicate-nested.json: $.rules[1].do: duplicate key 'do'",
    ],
    "json-syntax.json": [
        "json-syntax.json:4: this is not valid JSON: Expecting property name enclosed in double quotes",
    ],
    "json-types.json": [
        "json-types.json: $.defaults.server_delay.max: found '2 minutes'; expected a duration: a number of seconds or a string with units such as '250ms', '2s', '10m', '1h', '1m30s' (not negative), or 'none' for no limit",
        "json-types.json: $.defaults.server_delay.on_exceed: found 'wait' (a string); expected one of cap, fail",
        "json-types.json: $.rules[0].log: found 'verbose' (a string); expected one of debug, info, warning, error",
    ],
    "list-document.yaml": [
        "list-document.yaml:1: $: found [{'policy': 'a-list'}, {'rules': []}] (a list); a policy is a mapping with the keys policy, description, extends, defaults, alerts, redact, errors, rules",
    ],
    "list-for-mapping.yaml": [
        "list-for-mapping.yaml:4: $.rules[0].when: found [{'status': 429}] (a list); expected a mapping with the keys status, method, host, path, headers, request_headers, body, failure, attempt, any, all, not",
    ],
    "many-mistakes.yaml": [
        "many-mistakes.yaml:4: $.defaults.retry.attemps: unknown key 'attemps'; allowed here: attempts, backoff, unsafe_methods, delay_from, delay_min; did you mean 'attempts'?",
        "many-mistakes.yaml:5: $.defaults.body_limit: found 'lots'; expected a size: a number of bytes or a string such as '64KiB', '1MiB', '500kB'",
        "many-mistakes.yaml:8: $.rules[0].when.stauts: unknown key 'stauts'; allowed here: status, method, host, path, headers, request_headers, body, failure, attempt, any, all, not; did you mean 'status'?",
        "many-mistakes.yaml:12: $.rules[1].do: found 'abrot' (a string); expected one of accept, retry, poll, abort; did you mean 'abort'?",
        "many-mistakes.yaml:15: $.rules[2].when.body.status: unknown operator 'equal'; expected exists, equals, in, contains, matches, gt, gte, lt, lte; did you mean 'equals'?",
        "many-mistakes.yaml:17: $.rules[2].poll.jitter: found 'ful' (a string); expected one of full, equal, none; did you mean 'full'?",
    ],
    "mapping-for-list.yaml": [
        "mapping-for-list.yaml:2: $.rules: found {'rate-limited': {'when': {'status': 429}, 'do': 'retry'}} (a mapping); expected a list",
    ],
    "missing-do.yaml": [
        "missing-do.yaml:3: $.rules[0].do: missing required key 'do'",
    ],
    "missing-policy.yaml": [
        "missing-policy.yaml:1: $.policy: missing required key 'policy'",
    ],
    "multi-document.yaml": [
        "multi-document.yaml:2: this is not valid YAML: expected a single document in the stream, but found another document (a policy file holds one document: remove the '---')",
    ],
    "multiplier-below-one.yaml": [
        "multiplier-below-one.yaml:4: $.defaults.retry.backoff.multiplier: found 0.5; expected a number >= 1 (1 keeps the delay constant)",
        "multiplier-below-one.yaml:5: $.defaults.poll.multiplier: found 0.0; expected a number >= 1 (1 keeps the delay constant)",
    ],
    "nested-conditions.yaml": [
        "nested-conditions.yaml:7: $.rules[0].when.any[1].stauts: unknown key 'stauts'; allowed here: status, method, host, path, headers, request_headers, body, failure, attempt, any, all, not; did you mean 'status'?",
        "nested-conditions.yaml:8: $.rules[0].when.not.failure: found 'timout' (a string); expected one of connect, protocol, read, timeout; did you mean 'timeout'?",
    ],
    "non-string-keys.yaml": [
        "non-string-keys.yaml:6: $.rules[0].when.body: found the key True (a boolean); keys must be strings (YAML reads yes/no/on/off/true/false as booleans and bare numbers as numbers: quote the key)",
        "non-string-keys.yaml:7: $.rules[0].when.body: found the key 200 (an integer); keys must be strings (YAML reads yes/no/on/off/true/false as booleans and bare numbers as numbers: quote the key)",
    ],
    "out-of-order-rule.yaml": [
        "out-of-order-rule.yaml:4: $.rules[0].when.stauts: unknown key 'stauts'; allowed here: status, method, host, path, headers, request_headers, body, failure, attempt, any, all, not; did you mean 'status'?",
        "out-of-order-rule.yaml:5: $.rules[0].do: found 'retyr' (a string); expected one of accept, retry, poll, abort; did you mean 'retry'?",
    ],
    "out-of-order-top.yaml": [
        "out-of-order-top.yaml:2: $.rulez: unknown key 'rulez'; allowed here: policy, description, extends, defaults, idempotency, alerts, redact, errors, rules; did you mean 'rules'?",
        "out-of-order-top.yaml:3: $.defualts: unknown key 'defualts'; allowed here: policy, description, extends, defaults, idempotency, alerts, redact, errors, rules; did you mean 'defaults'?",
    ],
    "out-of-order.json": [
        "out-of-order.json: $.rules[0].when.stauts: unknown key 'stauts'; allowed here: status, method, host, path, headers, request_headers, body, failure, attempt, any, all, not; did you mean 'status'?",
        "out-of-order.json: $.rules[0].do: found 'retyr' (a string); expected one of accept, retry, poll, abort; did you mean 'retry'?",
    ],
    "python-tag.yaml": [
        "python-tag.yaml:2: $.description: unsupported YAML tag 'tag:yaml.org,2002:python/object/apply:os.system'",
    ],
    "python-tag-mapping.yaml": [
        "python-tag-mapping.yaml:1: $: unsupported YAML tag 'tag:yaml.org,2002:python/object:referee.Policy'",
    ],
    "python-tag-scalar.yaml": [
        "python-tag-scalar.yaml:2: $.description: this value cannot be read: could not determine a constructor for the tag 'tag:yaml.org,2002:python/name:os.system'",
    ],
    "scalar-document.yaml": [
        "scalar-document.yaml:1: $: found 'just some text' (a string); a policy is a mapping with the keys policy, description, extends, defaults, alerts, redact, errors, rules",
    ],
    "settings-of-another-action.yaml": [
        "settings-of-another-action.yaml:6: $.rules[0].retry: retry settings on a rule that does not retry (do: abort); remove them or set do: retry",
        "settings-of-another-action.yaml:10: $.rules[1].poll: poll settings on a rule that does not poll (do: retry); remove them or set do: poll",
    ],
    "string-for-int.yaml": [
        "string-for-int.yaml:4: $.defaults.retry.attempts: found '4' (a string); expected a whole number of sends >= 1 (the first send counts), or 'unlimited'",
    ],
    "toml-duplicate-key.toml": [
        "toml-duplicate-key.toml:3: this is not valid TOML: Cannot overwrite a value (at line 3, column 20)",
    ],
    "toml-syntax.toml": [
        "toml-syntax.toml:6: this is not valid TOML: Invalid value (at line 6, column 6)",
    ],
    "toml-types.toml": [
        "toml-types.toml: $.defaults.retry.attempts: found 'four' (a string); expected a whole number of sends >= 1 (the first send counts), or 'unlimited'",
        "toml-types.toml: $.rules[0].do: found 'retyr' (a string); expected one of accept, retry, poll, abort; did you mean 'retry'?",
    ],
    "unknown-action.yaml": [
        "unknown-action.yaml:5: $.rules[0].do: found 'retyr' (a string); expected one of accept, retry, poll, abort; did you mean 'retry'?",
    ],
    "unknown-condition-key.yaml": [
        "unknown-condition-key.yaml:4: $.rules[0].when.stauts: unknown key 'stauts'; allowed here: status, method, host, path, headers, request_headers, body, failure, attempt, any, all, not; did you mean 'status'?",
    ],
    "unknown-error.yaml": [
        "unknown-error.yaml:6: $.rules[0].error: found 'InsuficientCredits' (a string); expected a built-in or registered error class: Aborted, AuthenticationError, BadRequest, CircuitOpen, DeadlineExceeded, InsufficientCredits, JobFailed, NotFound, NotReplayable, PermissionDenied, RateLimited, RetriesExhausted, ServerError; did you mean 'InsufficientCredits'? (declare your own under errors:, or register it with referee.register_error)",
    ],
    "unknown-nested-keys.yaml": [
        "unknown-nested-keys.yaml:4: $.defaults.retry.backoff.multipler: unknown key 'multipler'; allowed here: initial, multiplier, max, jitter; did you mean 'multiplier'?",
        "unknown-nested-keys.yaml:6: $.defaults.poll.request.methd: unknown key 'methd'; allowed here: method, url; did you mean 'method'?",
        "unknown-nested-keys.yaml:7: $.defaults.server_delay.on_exced: unknown key 'on_exced'; allowed here: max, on_exceed; did you mean 'on_exceed'?",
        "unknown-nested-keys.yaml:12: $.rules[0].alert.sevrity: unknown key 'sevrity'; allowed here: kind, severity, dedupe, message; did you mean 'severity'?",
        "unknown-nested-keys.yaml:13: $.rules[0].breaker.open_for: missing required key 'open_for'",
        "unknown-nested-keys.yaml:13: $.rules[0].breaker.open_fr: unknown key 'open_fr'; allowed here: name, open_for, methods; did you mean 'open_for'?",
    ],
    "unknown-operator.yaml": [
        "unknown-operator.yaml:5: $.rules[0].when.body.status: unknown operator 'equal'; expected exists, equals, in, contains, matches, gt, gte, lt, lte; did you mean 'equals'?",
    ],
    "unknown-retry-key.yaml": [
        "unknown-retry-key.yaml:4: $.defaults.retry.attemps: unknown key 'attemps'; allowed here: attempts, backoff, unsafe_methods, delay_from, delay_min; did you mean 'attempts'?",
    ],
    "unknown-top-key.yaml": [
        "unknown-top-key.yaml:2: $.descripton: unknown key 'descripton'; allowed here: policy, description, extends, defaults, idempotency, alerts, redact, errors, rules; did you mean 'description'?",
        "unknown-top-key.yaml:3: $.rulse: unknown key 'rulse'; allowed here: policy, description, extends, defaults, idempotency, alerts, redact, errors, rules; did you mean 'rules'?",
    ],
    "yaml-syntax.yaml": [
        "yaml-syntax.yaml:5: this is not valid YAML: while parsing a flow mapping, did not find expected ',' or '}'",
    ],
    "yes-key.yaml": [
        "yes-key.yaml:2: $: found the key True (a boolean); keys must be strings (YAML reads yes/no/on/off/true/false as booleans and bare numbers as numbers: quote the key)",
    ],
}


#: Files on which the core is wrong today: the problems it should report,
#: and why it does not.  Each is a strict xfail until the core is fixed.
CORE_BUGS = {}


_KEYS = "a policy is a mapping with the keys policy, description, extends, defaults, alerts, redact, errors, rules"


def _problems(name):
    try:
        policy = referee.load_policy(name)
    except referee.PolicyError as exc:
        return exc.problems
    pytest.fail(f"{name} loaded as policy {policy.name!r}")
    return ()  # pragma: no cover - pytest.fail raises


@pytest.fixture(autouse=True)
def _in_broken(monkeypatch):
    monkeypatch.chdir(BROKEN)


_CASES = [
    *(
        pytest.param(name, expected, id=name)
        for name, expected in EXPECTED.items()
    ),
    *(
        pytest.param(
            name,
            expected,
            id=name,
            marks=pytest.mark.xfail(
                reason=reason, strict=True, raises=AssertionError
            ),
        )
        for name, (expected, reason) in CORE_BUGS.items()
    ),
]


class TestCorpus:
    @pytest.mark.parametrize(("name", "expected"), _CASES)
    def test_problems(self, name, expected):
        """
        The file fails to load with exactly these problems, in this order.
        """
        problems = _problems(name)

        assert expected == [str(p) for p in problems]

    def test_every_file_is_listed(self):
        """
        Every file of the corpus has an entry, and every entry a file.
        """
        on_disk = {p.name for p in BROKEN.iterdir()}

        assert on_disk == set(EXPECTED) | set(CORE_BUGS) | HELPERS

    def test_corpus_is_large(self):
        """
        The corpus holds at least thirty broken files, in all three formats.
        """
        suffixes = {Path(n).suffix for n in EXPECTED}

        assert len(EXPECTED) + len(CORE_BUGS) >= 30
        assert {".yaml", ".toml", ".json"} == suffixes

    @pytest.mark.parametrize("name", sorted(EXPECTED), ids=sorted(EXPECTED))
    def test_problems_are_errors_with_a_path_or_a_line(self, name):
        """
        Every problem is an error that says where: a line, a path, or both.
        """
        problems = _problems(name)

        nowhere = [
            str(p)
            for p in problems
            if p.line is None and not p.path and name not in WHOLE_DOCUMENT
        ]

        assert all(p.severity == "error" for p in problems)
        assert not nowhere

    def test_all_at_once_in_document_order(self):
        """
        A file with many mistakes reports every one, ordered by line.
        """
        problems = _problems("many-mistakes.yaml")
        lines = [p.line for p in problems]

        assert len(problems) >= 3
        assert sorted(lines) == lines

    @pytest.mark.parametrize(
        "name",
        ["billion-laughs.yaml", "billion-laughs-keys.yaml"],
        ids=["values", "keys"],
    )
    def test_alias_bomb_is_refused_quickly(self, name):
        """
        A billion-laughs document is refused well before it expands.
        """
        start = time.perf_counter()
        problems = _problems(name)
        elapsed = time.perf_counter() - start

        assert EXPECTED[name] == [str(p) for p in problems]
        assert elapsed < 2.0

    def test_python_tags_never_run(self, capfd):
        """
        A python/object tag is refused and runs nothing.
        """
        for name in ("python-tag.yaml", "python-tag-scalar.yaml"):
            _problems(name)

        assert "pwned" not in capfd.readouterr().out

    def test_extends_problem_names_the_parent(self):
        """
        A problem in an extended file names that file, not the extending one.
        """
        (problem,) = _problems("extends-broken.yaml")

        expected = ("broken-parent.yaml", 4, "$.defaults.retry.attempts")

        assert expected == (problem.file, problem.line, problem.path)

    def test_path_objects_name_the_file_as_given(self):
        """
        A pathlib.Path loads like the same path given as a string.
        """
        as_str = _problems("unknown-retry-key.yaml")
        as_path = _problems(Path("unknown-retry-key.yaml"))

        assert as_str == as_path

    def test_text_is_checked_like_a_file(self):
        """
        load_policy_text reports the same problems under the given source.
        """
        text = (BROKEN / "many-mistakes.yaml").read_text()
        with pytest.raises(referee.PolicyError) as exc_info:
            referee.load_policy_text(text, source="many-mistakes.yaml")

        assert EXPECTED["many-mistakes.yaml"] == [
            str(p) for p in exc_info.value.problems
        ]

    def test_string_source_defaults(self):
        """
        Text loaded without a source is reported as <string>.
        """
        expected = [
            "<string>:2: $.rulse: unknown key 'rulse'; allowed here: policy, description, extends, defaults, idempotency, alerts, redact, errors, rules; did you mean 'rules'?"
        ]
        with pytest.raises(referee.PolicyError) as exc_info:
            referee.load_policy_text("policy: x\nrulse: []\n")

        assert expected == [str(p) for p in exc_info.value.problems]

    def test_unknown_format_is_a_value_error(self):
        """
        load_policy_text refuses a format it does not know.
        """
        with pytest.raises(ValueError, match="fmt must be"):
            referee.load_policy_text("policy: x", fmt="ini")


_EMPTY = f"<string>: empty; {_KEYS}"

#: Documents that are empty, or that hold no policy mapping.
EMPTY_CASES = [
    pytest.param("yaml", "", _EMPTY, id="yaml-empty"),
    pytest.param("yaml", "# nothing yet\n", _EMPTY, id="yaml-comment"),
    pytest.param("toml", "", _EMPTY, id="toml-empty"),
    pytest.param("toml", "# nothing yet\n", _EMPTY, id="toml-comment"),
    pytest.param(
        "yaml",
        "{}",
        "<string>:1: $.policy: missing required key 'policy'",
        id="yaml-empty-mapping",
    ),
    pytest.param(
        "yaml",
        "[]",
        f"<string>:1: $: found [] (a list); {_KEYS}",
        id="yaml-list",
    ),
    pytest.param("json", "", _EMPTY, id="json-empty"),
    pytest.param("json", " \n", _EMPTY, id="json-blank"),
    pytest.param(
        "json",
        "{}",
        "<string>: $.policy: missing required key 'policy'",
        id="json-empty-mapping",
    ),
    *(
        pytest.param(
            "json",
            text,
            f"<string>: $: found {found}; {_KEYS}",
            id=f"json-{name}",
        )
        for name, text, found in [
            ("list", "[]", "[] (a list)"),
            ("zero", "0", "0 (an integer)"),
            ("false", "false", "False (a boolean)"),
        ]
    ),
]


class TestOnePass:
    def test_structure_duplicate_and_template_together(self):
        """
        A structural error, a duplicate id and an unknown template field,
        all in one rule, are reported together: the checks of the second
        pass do not wait for the first to be clean.
        """
        text = (
            "policy: p\n"
            "rules:\n"
            "  - {id: a, when: {status: 429}, do: retry}\n"
            "  - id: a\n"
            "    when: {status: 503, bogus: 1}\n"
            "    do: abort\n"
            "    alert: {kind: outage, message: '{stauts}'}\n"
        )
        with pytest.raises(referee.PolicyError) as exc:
            referee.load_policy_text(text)

        assert [
            (4, "$.rules[1].id", "duplicate rule id 'a'"),
            (5, "$.rules[1].when.bogus", "unknown key 'bogus'"),
            (
                7,
                "$.rules[1].alert.message",
                "unknown field {stauts} in the template '{stauts}'",
            ),
        ] == [
            (p.line, p.path, p.message[: p.message.index(";")])
            for p in exc.value.problems
        ]

    def test_settings_of_another_action_beside_a_structural_error(self):
        """
        Poll settings on a retry rule are reported even when the rule's
        error class is unknown.
        """
        text = (
            "policy: p\n"
            "rules:\n"
            "  - {id: a, when: {status: 503}, do: retry, error: Nope,"
            " poll: {initial: 1s}}\n"
        )
        with pytest.raises(referee.PolicyError) as exc:
            referee.load_policy_text(text)

        assert ["$.rules[0].error", "$.rules[0].poll"] == sorted(
            p.path for p in exc.value.problems
        )

    def test_a_wrong_id_is_no_duplicate(self):
        """
        A rule whose id is wrong is not taken for the unnamed rule-N: the
        only problem is its id.
        """
        text = (
            "policy: p\n"
            "rules:\n"
            "  - {id: rule-2, when: {status: 503}, do: retry}\n"
            "  - {id: 'bad id!', when: {status: 500}, do: abort}\n"
        )
        with pytest.raises(referee.PolicyError) as exc:
            referee.load_policy_text(text)

        assert ["$.rules[1].id"] == [p.path for p in exc.value.problems]


class TestEmptyDocuments:
    @pytest.mark.parametrize(("fmt", "text", "expected"), EMPTY_CASES)
    def test_problem(self, fmt, text, expected):
        """
        An empty document is 'empty'; an empty mapping lacks its policy.
        """
        with pytest.raises(referee.PolicyError) as exc_info:
            referee.load_policy_text(text, fmt=fmt)

        assert [expected] == [str(p) for p in exc_info.value.problems]


class TestLoneSurrogate:
    def test_yaml_text_with_a_lone_surrogate(self):
        """
        A string holding a lone surrogate (no file can) is a PolicyError,
        not libyaml's UnicodeEncodeError; found by the loader fuzz.
        """
        with pytest.raises(referee.PolicyError) as exc_info:
            referee.load_policy_text("\ud800policy: a\nrules: []\n")

        assert [
            (
                "<string>: this is not valid YAML: the text holds '\\ud800' at "
                "character 1, a lone surrogate that no UTF-8 file can hold"
            )
        ] == [str(p) for p in exc_info.value.problems]


class TestUnreadable:
    @pytest.fixture
    def files(self, tmp_path, monkeypatch):
        """
        A directory named like a policy, a Latin-1 file and one too large.
        """
        monkeypatch.chdir(tmp_path)
        (tmp_path / "dir.yaml").mkdir()
        (tmp_path / "latin.yaml").write_bytes(b"policy: caf\xe9\n")
        (tmp_path / "big.yaml").write_bytes(
            b"policy: big\n#" + b"x" * _load.MAX_FILE
        )
        for name in ("dir", "latin", "big", "nope"):
            (tmp_path / f"child-{name}.yaml").write_text(
                f"policy: child\nextends: {name}.yaml\n"
            )

    @pytest.mark.parametrize(
        ("name", "reason"),
        [
            ("nope", os.strerror(errno.ENOENT)),
            ("dir", os.strerror(errno.EISDIR)),
            ("latin", "it is not UTF-8 text"),
            ("big", f"it is larger than {_load.MAX_FILE} bytes"),
        ],
        ids=["missing", "directory", "not-utf-8", "too-large"],
    )
    def test_reason(self, files, name, reason):
        """
        A file that cannot be read says why, loaded or extended (on the
        extends line).
        """
        expected = [
            [
                f"{name}.yaml: cannot read the policy file '{name}.yaml': {reason}"
            ],
            [
                f"child-{name}.yaml:2: $.extends: cannot read the policy file '{name}.yaml': {reason}"
            ],
        ]

        assert expected == [
            [str(p) for p in _problems(f"{n}.yaml")]
            for n in (name, f"child-{name}")
        ]

    def test_unknown_bundled_name(self):
        """
        A name without a suffix that is not bundled lists the bundled ones.
        """
        expected = [
            f"nope: there is no bundled policy named 'nope'; bundled: {', '.join(referee.bundled_names())} (a path needs a suffix: .yaml, .yml, .toml, .json)"
        ]

        assert expected == [str(p) for p in _problems("nope")]


class TestPolicyError:
    def test_str_lists_every_problem(self):
        """
        str(PolicyError) counts the problems and lists each on its own line.
        """
        problems = _problems("many-mistakes.yaml")
        expected = "\n".join(
            [
                f"{len(problems)} problems in policy:",
                *(f"  {line}" for line in EXPECTED["many-mistakes.yaml"]),
            ]
        )

        assert expected == str(referee.PolicyError(problems))

    def test_one_problem(self):
        """
        A single problem is counted in the singular.
        """
        err = referee.PolicyError(
            [referee.Problem("p.yaml", 3, "$.rules[0].do", "bad")]
        )

        expected = "1 problem in policy:\n  p.yaml:3: $.rules[0].do: bad"

        assert expected == str(err)

    @pytest.mark.parametrize(
        ("problem", "expected"),
        [
            (referee.Problem("p.yaml", 3, "$.x", "bad"), "p.yaml:3: $.x: bad"),
            (
                referee.Problem("p.json", None, "$.x", "bad"),
                "p.json: $.x: bad",
            ),
            (referee.Problem("p.yaml", 7, "", "bad"), "p.yaml:7: bad"),
            (referee.Problem("p.yaml", None, "", "bad"), "p.yaml: bad"),
        ],
        ids=["line-and-path", "path-only", "line-only", "neither"],
    )
    def test_problem_str(self, problem, expected):
        """
        A problem renders as file:line: path: message, minus what it lacks.
        """
        assert expected == str(problem)

    def test_is_a_referee_error(self):
        """
        PolicyError is caught by except RefereeError.
        """
        assert issubclass(referee.PolicyError, referee.RefereeError)


class TopUpRequired(referee.Aborted):
    """
    An application's own error, for register_error.
    """


CUSTOM = """\
policy: custom-error
rules:
  - id: top-up
    when: {status: 402}
    do: abort
    error: TopUpRequired
"""


@pytest.fixture
def registry(monkeypatch):
    """
    A private copy of the error registry, so registrations do not leak.
    """
    monkeypatch.setattr(_errors, "_REGISTRY", dict(_errors._REGISTRY))


class TestRegisterError:
    def test_unregistered_name_is_a_problem(self, registry):
        """
        A name nobody registered is refused.
        """
        with pytest.raises(referee.PolicyError) as exc_info:
            referee.load_policy_text(CUSTOM)

        (problem,) = exc_info.value.problems
        expected = ("$.rules[0].error", 6)

        assert expected == (problem.path, problem.line)
        assert "'TopUpRequired'" in problem.message

    def test_registered_name_is_valid(self, registry):
        """
        After register_error, a policy may name the class.
        """
        referee.register_error(TopUpRequired)
        policy = referee.load_policy_text(CUSTOM)

        assert TopUpRequired is policy.rule("top-up").error

    def test_registered_under_another_name(self, registry):
        """
        name= registers the class under the name policies use.
        """
        referee.register_error(TopUpRequired, name="TopUp")
        policy = referee.load_policy_text(
            CUSTOM.replace("TopUpRequired", "TopUp")
        )

        assert TopUpRequired is policy.rule("top-up").error

    def test_registered_name_is_suggested(self, registry):
        """
        A near miss of a registered name is suggested.
        """
        referee.register_error(TopUpRequired)
        with pytest.raises(referee.PolicyError) as exc_info:
            referee.load_policy_text(
                CUSTOM.replace("TopUpRequired", "TopUpRequird")
            )

        assert "did you mean 'TopUpRequired'?" in str(exc_info.value)

    @pytest.mark.parametrize(
        "cls",
        [ValueError, referee.PolicyError, "Aborted", None],
        ids=["value-error", "policy-error", "a-string", "none"],
    )
    def test_not_aborted_is_a_type_error(self, registry, cls):
        """
        Only subclasses of Aborted can be registered.
        """
        with pytest.raises(TypeError, match=r"subclass of referee\.Aborted"):
            referee.register_error(cls)

    def test_taken_name_is_a_value_error(self, registry):
        """
        A name already used by another class cannot be taken over.
        """

        class RateLimited(referee.Aborted):
            pass

        with pytest.raises(ValueError, match="already registered"):
            referee.register_error(RateLimited)

    def test_registering_twice_is_harmless(self, registry):
        """
        Registering the same class under the same name again is allowed.
        """
        referee.register_error(TopUpRequired)
        referee.register_error(TopUpRequired)

        assert TopUpRequired is _errors.error_class("TopUpRequired")
