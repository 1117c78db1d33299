"""Databases pack: SQL passed to a client, database admin CLIs, key-value and document stores.

SQL through a client (-c/-e/--query/positional SQL, a heredoc or echo piped in, or
`analyze(..., tool=<client>)`), comments and literals ignored: DROP TABLE/DATABASE/SCHEMA/
KEYSPACE/OWNED, TRUNCATE, DELETE without WHERE are critical; other DROPs, UPDATE without WHERE
and ALTER TABLE ... DROP are warnings.
CLIs: `dropdb`, `mysqladmin drop`, `pg_dropcluster`, `redis-cli FLUSHALL/FLUSHDB`, Mongo
`dropDatabase()`/`drop()`/`deleteMany({})`, `etcdctl del --prefix`/`--from-key`, `consul kv delete
-recurse`, `influx bucket delete`, a `curl -X DELETE` of a whole Elasticsearch index pattern:
critical. `redis-cli DEL/UNLINK` fed keys by xargs or a listing (`redis-cli --scan | xargs redis-cli del`,
`redis-cli del $(redis-cli --scan)`), and FLUSHALL/FLUSHDB read on its input or commands built
from a key listing (`echo FLUSHALL | redis-cli`, `redis-cli --scan | sed 's/^/DEL /' | redis-cli`): critical.
Also critical: `vault secrets/auth disable`, `vault kv metadata delete`, `kafka-topics --delete`,
`rabbitmqctl reset/force_reset/delete_vhost`, InfluxQL through `influx -execute`, a Cypher
DELETE of an unfiltered MATCH (`cypher-shell "MATCH (n) DETACH DELETE n"`).
`vault kv delete/destroy`, `kafka-consumer-groups --delete`, `rabbitmqctl delete_queue/purge_queue`,
`dropuser`, `mongorestore --drop`, `pg_restore --clean`, `redis-cli DEL`, `curl -X
DELETE` of one index: warning. `pg_dump --clean` only writes a dump: safe.
"""

# ruff: noqa: E501 - a pack keeps one rule per line, so it reads as a table

from __future__ import annotations

import re

from orchestrator.core.risk.table import Pack, Rule, tool
from orchestrator.core.risk_types import Invocation, Risk, program

SQL_CLIENTS: dict[str, frozenset[str]] = {
    "psql": frozenset({"-c", "--command"}),
    "usql": frozenset({"-c", "--command"}),
    "mysql": frozenset({"-e", "--execute"}),
    "mariadb": frozenset({"-e", "--execute"}),
    "cqlsh": frozenset({"-e", "--execute"}),
    "clickhouse-client": frozenset({"-q", "--query"}),
    "sqlcmd": frozenset({"-Q", "-q", "--query"}),
    "snowsql": frozenset({"-q", "--query"}),
    "trino": frozenset({"--execute"}),
    "duckdb": frozenset({"-c", "-s", "-cmd"}),
    "sqlite3": frozenset({"-cmd"}),
    "influx": frozenset({"-execute"}),  # InfluxDB 1.x's InfluxQL
    "cockroach": frozenset({"-e", "--execute"}),  # cockroach sql -e
}
_POSITIONAL_SQL = frozenset({"sqlite3", "duckdb"})  # client DB [SQL ...]
_SQLITE_VALUE_OPTS = frozenset({"-init", "-separator", "-newline", "-nullvalue", "-vfs", "-maxsize", "-mmap"})


def sql_texts(inv: Invocation) -> list[str]:
    """SQL passed on the command line of a database client (not stdin)."""
    name = program(inv.argv[0])
    args = [w.text for w in inv.argv[1:]]
    if name == "clickhouse" and args[:1] == ["client"]:
        name, args = "clickhouse-client", args[1:]
    flags = SQL_CLIENTS.get(name)
    if flags is None:
        return []
    texts: list[str] = []
    positional: list[str] = []
    i = 0
    while i < len(args):
        a = args[i]
        if a in flags:
            if i + 1 < len(args):
                texts.append(args[i + 1])
            i += 2
            continue
        long_value = next((a[len(f) + 1 :] for f in flags if f.startswith("--") and a.startswith(f + "=")), None)
        short_value = next((a[2:] for f in flags if len(f) == 2 and a.startswith(f) and len(a) > 2), None)
        if long_value is not None or short_value is not None:
            texts.append(long_value if long_value is not None else str(short_value))
        elif a in _SQLITE_VALUE_OPTS:
            i += 1
        elif not a.startswith("-"):
            positional.append(a)
        i += 1
    if name in _POSITIONAL_SQL:
        texts.extend(positional[1:])
    return texts


def is_sql_client(inv: Invocation) -> bool:
    name = program(inv.argv[0])
    return name in SQL_CLIENTS or (name == "clickhouse" and [w.text for w in inv.argv[1:2]] == ["client"])


# Unterminated comments and literals run to the end, so every pattern is linear.
_SQL_NOISE = re.compile(r"--[^\n]*|/\*.*?(?:\*/|\Z)|'(?:[^']|'')*'?|\$\$.*?(?:\$\$|\Z)", re.S)
_SQL_CRITICAL_DROP = re.compile(r"\bDROP\s+(?:TABLE|DATABASE|SCHEMA|TABLESPACE|OWNED|KEYSPACE|COLUMNFAMILY)\b", re.I)
_SQL_DROP = re.compile(r"\bDROP\s+(?:[A-Z]+\s+)?[A-Z]+\b", re.I)
_SQL_DELETE = re.compile(r"\bDELETE\s+(?:FROM\s+)?[\w.\"`\[\]]+", re.I)
_SQL_UPDATE = re.compile(r"\bUPDATE\s+[\w.\"`\[\]]+\s+SET\b", re.I)
_SQL_TRUNCATE = re.compile(r"\bTRUNCATE\b", re.I)
_SQL_WHERE = re.compile(r"\bWHERE\b", re.I)
_SQL_SUGGESTIONS = (
    "Add a WHERE clause so the statement only touches the intended rows",
    "Back up the table first (pg_dump -t / mysqldump) or run it inside BEGIN; ... ROLLBACK; to check the row count",
)


def sql_risks(sql: str) -> list[Risk]:
    """Risks of SQL text: DROP, TRUNCATE, DELETE/UPDATE without WHERE (comments and literals ignored)."""
    risks: list[Risk] = []
    for raw in _SQL_NOISE.sub(" '' ", sql[:100_000]).split(";"):
        stmt = " ".join(raw.split())
        if not stmt:
            continue
        shown = stmt if len(stmt) <= 80 else stmt[:77] + "..."
        has_where = _SQL_WHERE.search(stmt) is not None
        if m := _SQL_CRITICAL_DROP.search(stmt):
            risks.append(
                Risk("destructive_sql", "critical", f"SQL '{shown}' contains '{m.group(0)}' - requires approval", _SQL_SUGGESTIONS[1:])
            )
        elif _SQL_TRUNCATE.search(stmt):
            risks.append(Risk("destructive_sql", "critical", f"SQL '{shown}' empties a table - requires approval", _SQL_SUGGESTIONS[1:]))
        elif _SQL_DELETE.search(stmt) and not has_where:
            risks.append(
                Risk("destructive_sql", "critical", f"SQL '{shown}' deletes every row (no WHERE) - requires approval", _SQL_SUGGESTIONS)
            )
        elif _SQL_UPDATE.search(stmt) and not has_where:
            risks.append(
                Risk("destructive_sql", "warning", f"SQL '{shown}' updates every row (no WHERE) - review before running", _SQL_SUGGESTIONS)
            )
        elif m := _SQL_DROP.search(stmt):
            risks.append(
                Risk("destructive_sql", "warning", f"SQL '{shown}' contains '{m.group(0)}' - review before running", _SQL_SUGGESTIONS[1:])
            )
    return risks


_MONGO_DESTRUCTIVE = re.compile(r"dropDatabase\s*\(|\.drop\s*\(\s*\)|\.(?:deleteMany|remove)\s*\(\s*\{\s*\}\s*\)")


# redis-cli's options that take a value: the command is the first word after the options.
_REDIS_VALUES = frozenset(["-h", "-p", "-s", "-a", "-u", "-r", "-i", "-n", "-d", "-D", "--user", "--pass", "--askuser", "--cacert", "--cacertdir", "--cert", "--key", "--tls-ciphers", "--tls-ciphersuites", "--sni", "--pattern", "--count", "--quoted-pattern", "--rdb", "--functions-rdb", "--memkeys-samples", "--eval", "--lru-test", "--intrinsic-latency", "--pipe-timeout"])


# A command substitution that lists keys (`$(redis-cli --scan)`, `` `redis-cli keys '*'` ``).
_KEY_LISTING = re.compile(r"(?:\$\(|`)\s*\S*(?:redis|valkey)-cli\b[^)`]*(?:--scan|\bkeys\b)", re.IGNORECASE)


def _redis_command(args: list[str]) -> str | None:
    i = 0
    while i < len(args):
        if args[i].startswith("-"):
            i += 2 if args[i] in _REDIS_VALUES else 1
            continue
        return args[i]
    return None


REDIS_CLIENTS = frozenset({"redis-cli", "valkey-cli"})


def redis_reads_commands(inv: Invocation) -> bool:
    """`redis-cli` with no command of its own (or `--pipe`) runs the commands it reads on stdin."""
    return inv.name in REDIS_CLIENTS and _redis_command(inv.args) is None


def redis_text_risks(text: str) -> list[Risk]:
    """The commands of a text fed to `redis-cli` on stdin (`echo FLUSHALL | redis-cli`), as if given as arguments."""
    risks: list[Risk] = []
    for line in text.splitlines():
        words = line.split()
        verb = words[0].upper() if words else ""
        if verb in {"FLUSHALL", "FLUSHDB"}:
            risks.append(Risk("destructive_sql", "critical", f"Command 'redis-cli' reads {verb} on its input: it deletes every key - requires approval", ("Back up with 'redis-cli --rdb' first",)))
        elif verb in {"DEL", "UNLINK"}:
            risks.append(Risk("destructive_sql", "warning", f"Command 'redis-cli' reads {verb} on its input: it deletes keys"))
    return list(dict.fromkeys(risks))


def redis_listed_risk() -> Risk:
    """`redis-cli --scan | sed 's/^/DEL /' | redis-cli`: commands made from a key listing, unseen."""
    return Risk(
        "destructive_sql",
        "critical",
        "Command 'redis-cli' runs commands built at run time from a key listing (every key it finds) - requires approval",
        ("Count the keys first: redis-cli --scan --pattern PATTERN | wc -l", "Back up with 'redis-cli --rdb' first"),
    )


def nosql_risks(inv: Invocation) -> list[Risk] | None:
    name = program(inv.argv[0])
    args = [w.text for w in inv.argv[1:]]
    if name in {"redis-cli", "valkey-cli"}:
        if inv.stdin_fed and not args[-1:]:
            return None
        hit = next((a for a in args if a.upper() in {"FLUSHALL", "FLUSHDB"}), None)
        if hit:
            return [
                Risk(
                    "destructive_sql",
                    "critical",
                    f"Command 'redis-cli {hit}' deletes every key - requires approval",
                    ("Back up with 'redis-cli --rdb' first",),
                )
            ]
        verb = _redis_command(args)
        if verb is not None and verb.upper() in {"DEL", "UNLINK"}:
            listed = any(_KEY_LISTING.search(a) for a in args)  # `redis-cli del $(redis-cli --scan)`
            if inv.via_xargs or listed:  # `redis-cli --scan | xargs redis-cli del`: every key the listing finds
                how = f"{name} {verb} $(...)" if listed else f"xargs {name} {verb}"
                return [
                    Risk(
                        "destructive_sql",
                        "critical",
                        f"Command '{how}' deletes every key its input lists - requires approval",
                        ("Count the keys first: redis-cli --scan --pattern PATTERN | wc -l", "Back up with 'redis-cli --rdb' first"),
                    )
                ]
            return [Risk("destructive_sql", "warning", f"Command '{name} {verb}' deletes keys")]
        return []
    for i, a in enumerate(args):
        script = args[i + 1] if a == "--eval" and i + 1 < len(args) else a.removeprefix("--eval=") if a.startswith("--eval=") else None
        if script and _MONGO_DESTRUCTIVE.search(script):
            return [
                Risk(
                    "destructive_sql",
                    "critical",
                    f"Command '{name} --eval' drops or empties a collection - requires approval",
                    ("Back up with mongodump first and pass a filter to deleteMany",),
                )
            ]
    return []


def client_sql_risks(inv: Invocation) -> list[Risk] | None:
    """Risks of the SQL on a client's command line; None when it has none (`influx bucket delete`
    is then read by the rows)."""
    texts = sql_texts(inv)
    return [r for text in texts for r in sql_risks(text)] if texts else None


_CYPHER_VALUES = frozenset(["-a", "--address", "-u", "--username", "-p", "--password", "-d", "--database", "--format", "-f", "--file", "-P", "--param", "--encryption", "--access-mode"])
_CYPHER_DELETE = re.compile(r"\b(?:DETACH\s+)?DELETE\b", re.I)


def cypher_risks(inv: Invocation) -> list[Risk] | None:
    """`cypher-shell QUERY`: a DELETE of what an unfiltered MATCH finds (no WHERE, no property map)
    is critical, another DELETE a warning; DROP DATABASE as in SQL."""
    args = inv.args
    queries = [a for i, a in enumerate(args) if not a.startswith("-") and (i == 0 or args[i - 1] not in _CYPHER_VALUES)]
    for query in queries:
        if risks := [r for r in sql_risks(query) if "DROP" in r.message]:
            return risks
        if _CYPHER_DELETE.search(query):
            unfiltered = not _SQL_WHERE.search(query) and "{" not in query
            if unfiltered:
                return [Risk("destructive_sql", "critical", f"Cypher '{query[:80]}' deletes every node the MATCH finds (no filter) - requires approval", ("Count them first: replace DELETE with RETURN count(*)",))]
            return [Risk("destructive_sql", "warning", f"Cypher '{query[:80]}' deletes nodes - review before running")]
    return None


_INDEX_ALL = re.compile(r"(?:^|/)(?:_all|\*|[\w.-]*\*)(?:[/?]|$)")


def curl_delete_risks(inv: Invocation) -> list[Risk] | None:
    """`curl -X DELETE URL`: a whole index pattern of a search cluster is critical, one resource a warning."""
    args = inv.args
    method = next((args[i + 1] for i, a in enumerate(args[:-1]) if a in {"-X", "--request"}), None)
    method = method or next((a[2:] for a in args if a.startswith("-X") and len(a) > 2), None)
    if method is None or method.upper() != "DELETE":
        return None
    urls = [a for a in args if "://" in a or re.match(r"^[\w.-]+:\d+/", a)]
    url = urls[0] if urls else "the URL"
    path = re.sub(r"^\w+://[^/]+", "", url) if "://" in url else url.split("/", 1)[-1]
    if _INDEX_ALL.search(path) or path.strip("/") in {"", "_all"}:
        return [
            Risk(
                "destructive_sql",
                "critical",
                f"Command 'curl -X DELETE {url}' deletes every index or resource matching the pattern - requires approval",
                ("Name one index, and snapshot first (PUT _snapshot/...)",),
            )
        ]
    return [Risk("destructive_command", "warning", f"Command 'curl -X DELETE {url}' deletes a remote resource - review before running")]


_PG = tool("dropdb", "pg_dropcluster", values="-h --host -p --port -U --username")
_DROPUSER = tool("dropuser", values="-h --host -p --port -U --username")
_MYSQLADMIN = tool("mysqladmin", "mariadb-admin", values="-h --host -P --port -u --user -S --socket")
_ETCD = tool("etcdctl", values="--endpoints --cacert --cert --key --user --dial-timeout --command-timeout")
_CONSUL = tool("consul", values="-http-addr -token -datacenter", clusters=False)
_INFLUX = tool("influx", values="--host --token -t --org -o --org-id --bucket-id -i --name -n", clusters=True)
_VAULT = tool("vault", values="-address -namespace -ns -format -mount -field -output-curl-string -ca-cert -client-cert -client-key", clusters=False)
_KAFKA_TOPICS = tool("kafka-topics", "kafka-topics.sh", values="--bootstrap-server --zookeeper --topic --command-config --partitions --replication-factor --config")
_KAFKA_GROUPS = tool("kafka-consumer-groups", "kafka-consumer-groups.sh", values="--bootstrap-server --group --topic --command-config --to-datetime --to-offset --shift-by")
_RABBITMQ = tool("rabbitmqctl", values="-n --node -p --vhost -t --timeout")
_MONGO_TOOLS = tool("mongorestore", "pg_restore", values="-d --dbname -h --host -U --username -p --port --uri")
_DUMP_FIRST = "Take a dump first (pg_dump -Fc DB > DB.dump / mysqldump DB > DB.sql)"

# fmt: off
RULES: tuple[Rule, ...] = (
    Rule("databases.dropdb", _PG, ("*",), "critical", "deletes a database or cluster", unless=("--help", "--version"), suggestion=_DUMP_FIRST, type="destructive_sql"),
    Rule("databases.dropuser", _DROPUSER, ("*",), "warning", "deletes a database role", unless=("--help",), type="destructive_sql"),
    Rule("databases.mysqladmin-drop", _MYSQLADMIN, ("drop",), "critical", "deletes a database", suggestion=_DUMP_FIRST, type="destructive_sql"),
    Rule("databases.mysqladmin-shutdown", _MYSQLADMIN, ("shutdown",), "warning", "stops the database server", type="destructive_sql"),
    Rule("databases.etcd-del-prefix", _ETCD, ("del",), "critical", "deletes every key under the prefix", flags=("--prefix", "--from-key"), suggestion="List the keys first: etcdctl get --prefix --keys-only KEY", type="destructive_sql"),
    Rule("databases.etcd-del", _ETCD, ("del",), "warning", "deletes a key", type="destructive_sql"),
    Rule("databases.consul-kv-recurse", _CONSUL, ("kv", "delete"), "critical", "deletes every key under the prefix", flags=("-recurse",), type="destructive_sql"),
    Rule("databases.influx-delete", _INFLUX, ("bucket|org|v1", "delete"), "critical", "deletes a bucket or organisation with its data", type="destructive_sql"),
    Rule("databases.influx-delete-data", _INFLUX, ("delete",), "critical", "deletes points in a time range", type="destructive_sql"),
    Rule("databases.vault-secrets-disable", _VAULT, ("secrets|auth", "disable"), "critical", "disables a secrets engine or auth method and deletes everything stored under it", suggestion="List what it holds first: vault kv list PATH", type="destructive_sql"),
    Rule("databases.vault-metadata-delete", _VAULT, ("kv", "metadata", "delete"), "critical", "deletes every version of a secret and its history", type="destructive_sql"),
    Rule("databases.vault-kv-destroy", _VAULT, ("kv", "destroy|delete"), "warning", "deletes or destroys versions of a secret", type="destructive_sql"),
    Rule("databases.kafka-topic-delete", _KAFKA_TOPICS, (), "critical", "deletes topics and every message in them", flags=("--delete",), type="destructive_sql"),
    Rule("databases.kafka-group-delete", _KAFKA_GROUPS, (), "warning", "deletes consumer groups or resets their offsets", flags=("--delete", "--delete-offsets", "--execute"), type="destructive_sql"),
    Rule("databases.rabbitmq-reset", _RABBITMQ, ("reset|force_reset|delete_vhost",), "critical", "deletes every queue, message, user and vhost of the node (or of a vhost)", type="destructive_sql"),
    Rule("databases.rabbitmq-delete", _RABBITMQ, ("delete_queue|purge_queue|delete_user",), "warning", "deletes or empties a queue, or deletes a user", type="destructive_sql"),
    Rule("databases.restore-drop", _MONGO_TOOLS, (), "warning", "drops existing objects before restoring", flags=("--drop", "--clean", "-c"), type="destructive_sql"),
)
# fmt: on

PACK = Pack(
    name="databases",
    summary="SQL through psql/mysql/sqlite3/...; dropdb, mysqladmin drop, redis FLUSHALL, mongo drops, etcd/consul deletes",
    rules=RULES,
    handlers={
        "redis-cli": nosql_risks,
        "valkey-cli": nosql_risks,
        "mongo": nosql_risks,
        "mongosh": nosql_risks,
        "curl": curl_delete_risks,
        **{name: client_sql_risks for name in SQL_CLIENTS},
        "clickhouse": client_sql_risks,
        "cypher-shell": cypher_risks,
    },
)
