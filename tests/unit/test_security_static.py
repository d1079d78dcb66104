"""Static security checks over the source tree: SQL built only from constants, loopback listeners by
default, no print outside the CLI, no secret-looking literal outside tests.

Each check reads the code as it is (AST or text), so a new module is checked the day it lands. Every
check also runs on a small bad sample, to prove it can fail.
"""
from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ops.config_schema import Config, field_specs, is_section, unwrap

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("engine", "feeds", "strategies", "ops")
SQL_METHODS = frozenset({"execute", "executemany", "executescript", "execute_fetchall", "execute_insert"})
NON_SQL_RECEIVERS = frozenset({"executor"})  # the paper executor has an `execute(intents)` too
SQL_BUILDERS = frozenset({"Query"})  # ops.ledger_read.Query(sql, params, decode)
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
HOST_NAME = re.compile(r"^(host|bind|listen|.*_host|.*_bind|listen_.*)$")
PRINT_ALLOWED = ("ops/cli.py", "ops/commands.py", "ops/cmd_*.py", "bench/*")
SKIP_DIRS = frozenset({".git", ".venv", "tests", "__pycache__", ".hypothesis", ".mypy_cache", ".ruff_cache", "var",
                       "out", "build", "node_modules", ".pytest_cache"})
SECRET_PATTERNS = {
    "64 hex digits (an HMAC key or secret)": re.compile(r"(?<![0-9A-Za-z])[0-9a-fA-F]{64}(?![0-9A-Za-z])"),
    "64 letters and digits (a Binance-style API key)": re.compile(r"(?<![0-9A-Za-z_])[A-Za-z0-9]{64}(?![0-9A-Za-z_])"),
    "a private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "an AWS access key id": re.compile(r"(?<![0-9A-Z])AKIA[0-9A-Z]{16}(?![0-9A-Z])"),
    "a secret assigned in the text": re.compile(
        r"\b(?i:api_?key|api_?secret|secret|password|passwd|passphrase|token)\b['\"]?\s*[=:]\s*['\"]"
        r"(?![A-Z0-9_]+['\"])(?!\$\{)(?!<)[^'\"\s]{8,}['\"]"),
}


def python_files(*roots: str) -> list[Path]:
    return sorted(p for r in roots for p in (ROOT / r).rglob("*.py") if "__pycache__" not in p.parts)


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# ---- SQL: the statement text is built from constants only; values go in as parameters ----------------------

class SqlChecker:
    """Judges whether an expression can only be SQL built from constants (literals, module constants, `?` lists).

    A parameter is followed to every call of its function in the module; an imported UPPER_CASE name is a
    constant by convention; a loop variable is a constant when it runs over constants.
    """

    def __init__(self, tree: ast.Module) -> None:
        self.tree = tree
        self.parents: dict[ast.AST, ast.AST] = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
        self.module: dict[str, list[ast.expr]] = {}
        self.functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
        self.imported: set[str] = set()
        for node in tree.body:
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                for name in _assigned_names(node):
                    self.module.setdefault(name, []).append(node.value)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                self.functions[node.name] = node
            elif isinstance(node, ast.ImportFrom | ast.Import):
                self.imported |= {(a.asname or a.name).split(".")[0] for a in node.names}

    def scope_of(self, node: ast.AST) -> ast.AST | None:
        scope: ast.AST | None = self.parents.get(node)
        while scope is not None and not isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            scope = self.parents.get(scope)
        return scope

    def constant(self, expr: ast.expr | None, scope: ast.AST | None, seen: frozenset[str] = frozenset()) -> bool:
        if expr is None:
            return False
        if isinstance(expr, ast.Constant):
            return isinstance(expr.value, str | int | float | bytes) or expr.value is None
        if isinstance(expr, ast.JoinedStr):
            return all(self.constant(v.value, scope, seen) for v in expr.values if isinstance(v, ast.FormattedValue))
        if isinstance(expr, ast.BinOp):
            return isinstance(expr.op, ast.Add) and self.constant(expr.left, scope, seen) and self.constant(
                expr.right, scope, seen)
        if isinstance(expr, ast.IfExp):
            return self.constant(expr.body, scope, seen) and self.constant(expr.orelse, scope, seen)
        if isinstance(expr, ast.Tuple | ast.List | ast.Set):
            return all(self.constant(e, scope, seen) for e in expr.elts)
        if isinstance(expr, ast.GeneratorExp | ast.ListComp):
            loops = {g.target.id for g in expr.generators if isinstance(g.target, ast.Name)}
            over_constants = all(self.constant(g.iter, scope, seen) for g in expr.generators)
            return self.constant(expr.elt, scope, seen | loops if over_constants else seen - loops) and (
                over_constants or not _uses(expr.elt, loops))
        if isinstance(expr, ast.Attribute):
            return expr.attr == "sql"  # a Query's text: every Query(...) is checked where it is built
        if isinstance(expr, ast.Name):
            return self._name(expr.id, scope, seen)
        if isinstance(expr, ast.Call):
            return self._call(expr, scope, seen)
        return False

    def _name(self, name: str, scope: ast.AST | None, seen: frozenset[str]) -> bool:
        if name in seen:
            return True
        seen = seen | {name}
        if isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef):
            params = [a.arg for a in [*scope.args.posonlyargs, *scope.args.args]]
            if name in params:
                return self._parameter(scope, params, name, seen)
            if name in {a.arg for a in scope.args.kwonlyargs}:
                return self._parameter(scope, [], name, seen)
            values = _local_values(scope, name)
            if values is not None:
                return bool(values) and all(self.constant(v, scope, seen) for v in values)
        if name in self.imported:
            return name.lstrip("_").isupper()
        values = self.module.get(name)
        return bool(values) and all(self.constant(v, None, seen) for v in values or [])

    def _parameter(self, fn: ast.FunctionDef | ast.AsyncFunctionDef, params: list[str], name: str,
                   seen: frozenset[str]) -> bool:
        """A parameter is constant when every call of its function in this module passes a constant."""
        index = params.index(name) if name in params else None
        if index is not None and params and params[0] in ("self", "cls"):
            index -= 1
        sites = [n for n in ast.walk(self.tree) if isinstance(n, ast.Call) and (
            (isinstance(n.func, ast.Name) and n.func.id == fn.name)
            or (isinstance(n.func, ast.Attribute) and n.func.attr == fn.name))]
        if not sites:
            return False
        for call in sites:
            given = next((k.value for k in call.keywords if k.arg == name), None)
            if given is None and index is not None and 0 <= index < len(call.args):
                given = call.args[index]
            if not self.constant(given, self.scope_of(call), seen):
                return False
        return True

    def _call(self, call: ast.Call, scope: ast.AST | None, seen: frozenset[str]) -> bool:
        f = call.func
        args = [*call.args, *(k.value for k in call.keywords)]
        if isinstance(f, ast.Attribute) and f.attr == "join" and isinstance(f.value, ast.Constant):
            return all(self.constant(a, scope, seen) for a in call.args)
        if isinstance(f, ast.Name) and (f.id in self.functions or f.id in CONSTANT_BUILTINS):
            return all(self.constant(a, scope, seen) for a in args)  # constants in, constants out
        return False


CONSTANT_BUILTINS = frozenset({"sorted", "tuple", "list", "frozenset", "set", "str", "repr", "len", "int"})


def _uses(expr: ast.expr, names: set[str]) -> bool:
    return any(isinstance(n, ast.Name) and n.id in names for n in ast.walk(expr))


def _assigned_names(node: ast.Assign | ast.AnnAssign) -> Iterator[str]:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    for t in targets:
        for n in ast.walk(t):
            if isinstance(n, ast.Name):
                yield n.id


def _local_values(scope: ast.AST, name: str) -> list[ast.expr] | None:
    """Every value bound to `name` in a function (appends included), or None when it is not local."""
    if not isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        return None
    params = {a.arg for a in [*scope.args.args, *scope.args.kwonlyargs, *scope.args.posonlyargs]}
    if name in params:
        return []
    values: list[ast.expr] = []
    found = False
    for node in ast.walk(scope):
        if isinstance(node, ast.Assign):
            for t in node.targets:
                if isinstance(t, ast.Name) and t.id == name:
                    found = True
                    values.append(node.value)
                elif isinstance(t, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    for te, ve in zip(t.elts, node.value.elts, strict=False):
                        if isinstance(te, ast.Name) and te.id == name:
                            found = True
                            values.append(ve)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign) and isinstance(node.target, ast.Name) \
                and node.target.id == name and node.value is not None:
            found = True
            values.append(node.value)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in (
                "append", "extend", "insert") and isinstance(node.func.value, ast.Name) and node.func.value.id == name:
            values.extend(node.args[-1:])
        elif isinstance(node, ast.For | ast.comprehension) and isinstance(node.target, ast.Name) \
                and node.target.id == name:
            return []
    return values if found else None


def sql_calls(checker: SqlChecker) -> Iterator[tuple[ast.Call, ast.AST | None]]:
    """(call, enclosing function) of every statement execution and every Query built."""
    for node in ast.walk(checker.tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        f = node.func
        is_exec = isinstance(f, ast.Attribute) and f.attr in SQL_METHODS and _receiver(f.value) not in NON_SQL_RECEIVERS
        is_builder = isinstance(f, ast.Name) and f.id in SQL_BUILDERS
        if is_exec or is_builder:
            yield node, checker.scope_of(node)


def _receiver(expr: ast.expr) -> str:
    return expr.attr if isinstance(expr, ast.Attribute) else expr.id if isinstance(expr, ast.Name) else ""


def sql_problems(source: str, name: str) -> list[str]:
    checker = SqlChecker(ast.parse(source))
    problems = []
    for call, scope in sql_calls(checker):
        sql = call.args[0]
        if not checker.constant(sql, scope):
            problems.append(f"{name}:{call.lineno}: SQL built from values: {ast.unparse(sql)[:100]}")
        elif isinstance(sql, ast.Constant) and isinstance(sql.value, str) and "?" in sql.value and len(call.args) < 2 \
                and not call.keywords:
            problems.append(f"{name}:{call.lineno}: placeholders but no parameters: {sql.value[:60]!r}")
    return problems


def test_every_sql_statement_in_ops_is_built_from_constants() -> None:
    problems = [p for path in python_files("ops") for p in sql_problems(path.read_text(), rel(path))]
    checked = sum(1 for path in python_files("ops") for _ in sql_calls(SqlChecker(ast.parse(path.read_text()))))
    assert checked >= 20, "the SQL check found almost no statements: has the ledger moved?"
    assert problems == []


@pytest.mark.parametrize("bad", [
    'def f(c, name):\n    c.execute(f"SELECT * FROM t WHERE name = \'{name}\'")\n',
    'def f(c, name):\n    c.execute("SELECT * FROM t WHERE name = \'%s\'" % name)\n',
    'def f(c, name):\n    c.execute("SELECT * FROM t WHERE name = \'{}\'".format(name))\n',
    'def f(c, name):\n    sql = "SELECT * FROM t WHERE name = " + name\n    c.executemany(sql, [])\n',
    'def f(c, col):\n    return Query(f"SELECT {col} FROM t", (), list)\n',
    'def f(c, names):\n    w = []\n    for n in names:\n        w.append(f"name = \'{n}\'")\n    c.execute(" OR ".join(w))\n',
    'def f(c):\n    c.execute("SELECT * FROM t WHERE id = ?")\n',
    'def run(c, sql):\n    c.execute(sql, ())\ndef g(c, who):\n    run(c, "SELECT 1 WHERE a = " + who)\n',
    'def run(c, sql):\n    c.execute(sql, ())\n',
])
def test_the_sql_check_catches_values_in_the_text(bad: str) -> None:
    assert sql_problems(bad, "sample.py")


def test_the_sql_check_allows_constant_ddl_and_placeholder_lists() -> None:
    good = (
        'COLS = "a, b"\nSCHEMA = f"CREATE TABLE t ({COLS})"\nSTATUSES = ("new", "open")\n'
        'def _sql_list(xs):\n    return ", ".join(f"\'{x}\'" for x in xs)\n'
        'def f(c, ids, who):\n    c.executescript(SCHEMA)\n'
        '    c.execute(f"SELECT {COLS} FROM t WHERE id IN ({\', \'.join(\'?\' for _ in ids)})", ids)\n'
        '    c.execute(f"SELECT 1 FROM t WHERE s IN ({_sql_list(STATUSES)})")\n'
        '    where = []\n    where.append("who = ?")\n    clause = f" WHERE {\' AND \'.join(where)}" if where else ""\n'
        '    c.execute("SELECT a FROM t" + clause, (who,))\n'
        'from elsewhere import TERMINAL\nDONE = ", ".join(f"\'{s}\'" for s in sorted(TERMINAL))\n'
        'class L:\n    def _lookup(self, sql, key):\n        return self.c.execute(sql, (key,))\n'
        '    def a(self, k):\n        return self._lookup(f"SELECT x FROM t WHERE s IN ({DONE}) AND k = ?", k)\n'
    )
    assert sql_problems(good, "sample.py") == []


# ---- listeners: loopback unless the operator says otherwise ---------------------------------------------

def host_fields(cls: Any, at: str = "") -> Iterator[tuple[str, Any]]:
    for f in field_specs(cls):
        base = unwrap(f.base)[0]
        if is_section(base):
            yield from host_fields(base, f"{at}{f.name}.")
        elif HOST_NAME.match(f.name):
            yield f"{at}{f.name}", f.default


def test_every_default_host_in_the_config_schema_is_loopback() -> None:
    found = dict(host_fields(Config))
    assert {"metrics.host", "mqtt.host", "feed.sim_host"} <= set(found)
    assert {k: v for k, v in found.items() if v != "127.0.0.1"} == {}


def host_default_problems(source: str, name: str) -> list[str]:
    """Parameters, keywords and argparse options named like a host whose literal default is not loopback."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        pairs: list[tuple[str, ast.expr]] = []
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            a = node.args
            pairs += list(zip([x.arg for x in a.args[len(a.args) - len(a.defaults):]], a.defaults, strict=True))
            pairs += [(x.arg, d) for x, d in zip(a.kwonlyargs, a.kw_defaults, strict=True) if d is not None]
        elif isinstance(node, ast.Call):
            pairs += [(k.arg, k.value) for k in node.keywords if k.arg]
            if isinstance(node.func, ast.Attribute) and node.func.attr == "add_argument" and node.args and \
                    isinstance(node.args[0], ast.Constant) and "host" in str(node.args[0].value):
                pairs += [("host", k.value) for k in node.keywords if k.arg == "default"]
        for arg, value in pairs:
            if HOST_NAME.match(arg) and isinstance(value, ast.Constant) and isinstance(value.value, str) \
                    and value.value not in LOOPBACK:
                problems.append(f"{name}:{value.lineno}: {arg} defaults to {value.value!r}")
    return problems


def test_no_listener_defaults_to_an_outside_address() -> None:
    problems = [p for path in python_files(*PACKAGES, "bench") for p in host_default_problems(path.read_text(), rel(path))]
    assert problems == []


@pytest.mark.parametrize("bad", ['def serve(host="0.0.0.0"): ...\n', "start(bind_host='::')\n",
                                 'p.add_argument("--host", default="0.0.0.0")\n', 'def f(*, listen_host=""): ...\n'])
def test_the_host_check_catches_open_defaults(bad: str) -> None:
    assert host_default_problems(bad, "sample.py")


# ---- print only in the command-line modules ----------------------------------------------------------------

def print_problems(source: str, name: str) -> list[str]:
    return [f"{name}:{n.lineno}: print()" for n in ast.walk(ast.parse(source))
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]


def test_print_only_in_the_cli_modules() -> None:
    files = [p for p in python_files(*PACKAGES) if not any(Path(rel(p)).match(g) for g in PRINT_ALLOWED)]
    assert len(files) > 30
    assert [q for p in files for q in print_problems(p.read_text(), rel(p))] == []


def test_the_print_check_sees_a_print() -> None:
    assert print_problems("def f():\n    print('hi')\n", "x.py") and not print_problems("console.print(1)\n", "x.py")


# ---- no secret-looking literal anywhere outside tests -------------------------------------------------------

def repo_text_files() -> Iterator[Path]:
    stack = [ROOT]
    while stack:
        d = stack.pop()
        for p in sorted(d.iterdir()):
            if p.is_dir():
                if p.name not in SKIP_DIRS and not p.name.endswith(".egg-info"):
                    stack.append(p)
            elif p.is_file() and p.stat().st_size < 5_000_000:
                yield p


def secret_problems(text: str, name: str) -> list[str]:
    problems = []
    for what, pattern in SECRET_PATTERNS.items():
        for m in pattern.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            problems.append(f"{name}:{line}: {what}")
    return problems


def test_no_secret_looking_literal_outside_tests() -> None:
    problems = []
    scanned = 0
    for path in repo_text_files():
        data = path.read_bytes()
        if b"\x00" in data[:4096]:
            continue  # binary
        scanned += 1
        problems += secret_problems(data.decode("utf-8", "replace"), rel(path))
    assert scanned > 50
    assert problems == []


@pytest.mark.parametrize("bad", [
    'SECRET = "' + "ab12" * 16 + '"', "key: " + "Zx9" * 21 + "Q", "-----BEGIN RSA PRIVATE KEY-----",
    "aws = 'AKIA" + "ABCDEFGHIJKLMNOP'", 'password = "hunter2-correct-horse"', 'api_secret: "s3cr3t-value-x"',
])
def test_the_secret_check_catches_obvious_secrets(bad: str) -> None:
    assert secret_problems(bad, "x")


@pytest.mark.parametrize("fine", ['api_key_env = "KEEL_API_KEY"', 'password_env: "KEEL_MQTT_PASSWORD"',
                                  'password = "${KEEL_MQTT_PASSWORD}"', 'token = "<your token>"', "sha = 'abc123'"])
def test_the_secret_check_leaves_names_and_placeholders_alone(fine: str) -> None:
    assert secret_problems(fine, "x") == []
