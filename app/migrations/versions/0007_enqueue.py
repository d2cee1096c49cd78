"""Transactional enqueue: jobfleet.enqueue(), and the job defaults it reads

Revision ID: 0007
Revises: 0006
Create Date: 2027-02-01

An application that shares Jobfleet's database inserts its jobs inside its own transaction:
committed with its own rows, or never there at all. Python applications call app/enqueue.py;
any other language calls the SQL function `jobfleet.enqueue(...)` created here, which does
what POST /jobs does:

- the same validation, as far as a SQL function can (names, priority, retries, timeout,
  run_at or delay_seconds, a payload Postgres can store, at most 64 levels deep, integers in
  64 bits), answering SQLSTATE 22023 (invalid_parameter_value) with the parameter named in
  the error's column field;
- the same defaults for what the call leaves out: `jobfleet.job_defaults`, which
  `python -m app migrate` keeps equal to DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT_SECONDS and
  MAX_TIMEOUT_SECONDS;
- the same idempotency: one job per (tenant, key) through INSERT ... ON CONFLICT on the same
  unique index, and the same request fingerprint as the API's (JobCreate.fingerprint: the
  SHA-256 of the request as sorted, compact JSON without its key), so that a key used through
  the API and through SQL for the same request names one job; a different request with a
  used key answers SQLSTATE 23505 (unique_violation);
- a time-ordered id (UUIDv7), as the API gives;
- and `pg_notify('jobfleet_enqueued', <job id>)`, which Postgres delivers at commit (never on a
  rollback) to the listener that pushes the id to Redis.

The function runs as the owner of the tables (SECURITY DEFINER, with its search_path pinned
to their schema): a role granted EXECUTE on it may enqueue, and needs no right on the jobs
table itself. EXECUTE is revoked from PUBLIC; `migrate` grants it to the application role.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SCHEMA_AND_DEFAULTS = """
CREATE SCHEMA jobfleet;

CREATE TABLE jobfleet.job_defaults (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    max_retries integer NOT NULL CHECK (max_retries BETWEEN 0 AND 100),
    timeout_seconds integer NOT NULL CHECK (timeout_seconds >= 1),
    max_timeout_seconds integer NOT NULL CHECK (max_timeout_seconds >= 1),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- The settings' own defaults; `migrate` writes the deployment's over them.
INSERT INTO jobfleet.job_defaults (max_retries, timeout_seconds, max_timeout_seconds)
VALUES (3, 300, 86400);
"""

# A UUIDv7: the Unix time in milliseconds in the first 48 bits, version 7, random bits after.
_UUID7 = """
CREATE FUNCTION jobfleet.uuid7() RETURNS uuid
LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(
        set_bit(set_bit(
            overlay(uuid_send(gen_random_uuid())
                    PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp())
                                                     * 1000)::bigint) FROM 3)
                    FROM 1 FOR 6),
            52, 1), 53, 1),
        'hex')::uuid
$$;
"""

# The request fingerprint, as JobCreate.fingerprint() computes it in Python: SHA-256 of
# orjson.dumps(request without its idempotency key, OPT_SORT_KEYS). These functions write
# that JSON text byte for byte: keys sorted by code point, no spaces, strings escaped as
# orjson escapes them (which is as to_json escapes them), integers as Python prints them and
# floats as orjson prints a Python float. The payload arrives as json, not jsonb, because only
# json keeps the text of a number: 1.0 is a float and 1 an integer to Python's JSON parser,
# and their fingerprints differ.
_FINGERPRINT = r"""
-- A double as orjson prints it: the shortest digits that read back as the same value, as
-- Python's repr() finds them; positional from 1e-5 up to below 1e16, with at least one
-- decimal, otherwise d.ddde+N / d.ddde-N. Postgres prints the shortest digits too (with
-- extra_float_digits = 1) but never a string that lies exactly halfway to a neighbouring
-- double, which Python's repr() does when reading it back rounds to this double (ties to even):
-- 6.89891494110039e+16, not 6.8989149411003904e+16. Such a string is one digit shorter
-- rounded down or up, so both are tried.
CREATE FUNCTION jobfleet.canonical_float(value double precision) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET extra_float_digits = 1 AS $$
DECLARE
    sign text := CASE WHEN value::text LIKE '-%' THEN '-' ELSE '' END;
    magnitude double precision := abs(value);
    parts text[];
    digits text;
    point integer;  -- digits before the decimal point: value = 0.<digits> x 10^point
    shorter numeric;
    candidate text;
    exponent integer;
BEGIN
    IF value = 0 THEN
        RETURN sign || '0.0';
    END IF;
    IF value IN ('Infinity', '-Infinity', 'NaN') THEN
        RAISE EXCEPTION 'not a finite number: %', value USING ERRCODE = 'invalid_parameter_value';
    END IF;
    parts := regexp_match(magnitude::text, '^([0-9]+)(\.([0-9]+))?(e([-+][0-9]+))?$');
    digits := parts[1] || coalesce(parts[3], '');
    point := length(parts[1]) + coalesce(parts[5]::integer, 0);
    point := point - (length(digits) - length(ltrim(digits, '0')));
    digits := rtrim(ltrim(digits, '0'), '0');
    IF length(digits) > 1 THEN
        FOREACH shorter IN ARRAY ARRAY[left(digits, -1)::numeric, left(digits, -1)::numeric + 1]
        LOOP
            candidate := shorter::text || 'e' || (point - length(digits) + 1);
            -- Beyond the largest double, a string reads as infinity: an error in Postgres.
            IF (CASE WHEN candidate::numeric < 1.7976931348623158e308
                     THEN candidate::double precision = magnitude ELSE false END) THEN
                point := length(shorter::text) + point - length(digits) + 1;
                digits := rtrim(shorter::text, '0');
                EXIT;
            END IF;
        END LOOP;
    END IF;
    exponent := point - 1;
    IF exponent < -5 OR exponent >= 16 THEN
        RETURN sign || left(digits, 1)
            || CASE WHEN length(digits) > 1 THEN '.' || substr(digits, 2) ELSE '' END
            || 'e' || CASE WHEN exponent > 0 THEN '+' ELSE '' END || exponent::text;
    ELSIF point <= 0 THEN
        RETURN sign || '0.' || repeat('0', -point) || digits;
    ELSIF point >= length(digits) THEN
        RETURN sign || digits || repeat('0', point - length(digits)) || '.0';
    END IF;
    RETURN sign || left(digits, point) || '.' || substr(digits, point + 1);
END
$$;

-- A JSON number as Python reads it: a float when it has a fraction or an exponent, else an
-- integer, which must fit in 64 bits (as the API requires).
CREATE FUNCTION jobfleet.canonical_number(token text) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    whole numeric;
BEGIN
    IF token ~ '[.eE]' THEN
        RETURN jobfleet.canonical_float(token::double precision);
    END IF;
    whole := token::numeric;
    IF whole NOT BETWEEN -9223372036854775808 AND 9223372036854775807 THEN
        RAISE EXCEPTION 'payload: an integer outside the signed 64-bit range: %', token
            USING ERRCODE = 'invalid_parameter_value', COLUMN = 'payload';
    END IF;
    RETURN whole::text;
END
$$;

-- A JSON document as sorted, compact JSON; containers nested at most 64 levels ([] is one).
-- An object that repeats a key keeps its last value, as Python's parser does.
CREATE FUNCTION jobfleet.canonical_json(document json, depth integer) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
DECLARE
    kind text := json_typeof(document);
    written text;
BEGIN
    IF kind IN ('object', 'array') AND depth > 64 THEN
        RAISE EXCEPTION 'payload: nested deeper than 64 levels'
            USING ERRCODE = 'invalid_parameter_value', COLUMN = 'payload';
    END IF;
    CASE kind
    WHEN 'object' THEN
        SELECT '{' || coalesce(string_agg(
                   to_json(kept.key)::text || ':' || jobfleet.canonical_json(kept.value, depth + 1),
                   ',' ORDER BY kept.key COLLATE "C"), '') || '}'
          INTO written
          FROM (SELECT DISTINCT ON (member.key) member.key, member.value
                  FROM json_each(document) WITH ORDINALITY AS member(key, value, position)
                 ORDER BY member.key, member.position DESC) AS kept;
    WHEN 'array' THEN
        SELECT '[' || coalesce(string_agg(jobfleet.canonical_json(item.value, depth + 1), ','
                                          ORDER BY item.position), '') || ']'
          INTO written
          FROM json_array_elements(document) WITH ORDINALITY AS item(value, position);
    WHEN 'string' THEN
        written := to_json(document #>> '{}')::text;
    WHEN 'number' THEN
        written := jobfleet.canonical_number(document #>> '{}');
    ELSE
        written := document #>> '{}';  -- true, false
        written := coalesce(written, 'null');
    END CASE;
    RETURN written;
END
$$;

-- A time as the API's JSON writes it: UTC, ISO 8601, microseconds only when there are some.
CREATE FUNCTION jobfleet.canonical_time(moment timestamptz) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT to_char(moment AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE WHEN to_char(moment AT TIME ZONE 'UTC', 'US') = '000000' THEN ''
                ELSE '.' || to_char(moment AT TIME ZONE 'UTC', 'US') END
        || 'Z'
$$;

CREATE FUNCTION jobfleet.fingerprint(
    task text, payload json, queue text, priority integer, run_at timestamptz,
    delay_seconds double precision, max_retries integer, timeout_seconds integer
) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT encode(sha256(convert_to(
        '{"delay_seconds":' || coalesce(jobfleet.canonical_float(delay_seconds), 'null')
        || ',"max_retries":' || coalesce(max_retries::text, 'null')
        || ',"payload":' || jobfleet.canonical_json(coalesce(payload, 'null'::json), 1)
        || ',"priority":' || coalesce(priority::text, 'null')
        || ',"queue":' || coalesce(to_json(queue)::text, 'null')
        || ',"run_at":' || coalesce(to_json(jobfleet.canonical_time(run_at))::text, 'null')
        || ',"task":' || coalesce(to_json(task)::text, 'null')
        || ',"timeout_seconds":' || coalesce(timeout_seconds::text, 'null')
        || '}', 'UTF8')), 'hex')
$$;
"""

# @tables@: the schema of the jobs table, quoted (the migration's current schema).
_ENQUEUE = r"""
CREATE FUNCTION jobfleet.enqueue(
    tenant text,
    task text,
    payload json DEFAULT '{}',
    queue text DEFAULT 'default',
    priority integer DEFAULT 0,
    idempotency_key text DEFAULT NULL,
    run_at timestamptz DEFAULT NULL,
    delay_seconds double precision DEFAULT NULL,
    max_retries integer DEFAULT NULL,
    timeout_seconds integer DEFAULT NULL
) RETURNS TABLE (job_id uuid, job_status text, created boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, @tables@, pg_temp AS $$
#variable_conflict use_column
DECLARE
    defaults jobfleet.job_defaults%ROWTYPE;
    document jsonb;
    print text;
    ready_at timestamptz;
    found_fingerprint text;
BEGIN
    IF enqueue.tenant IS NULL OR length(enqueue.tenant) NOT BETWEEN 1 AND 128 THEN
        RAISE EXCEPTION 'jobfleet.enqueue: tenant: 1 to 128 characters'
            USING ERRCODE = 'invalid_parameter_value', COLUMN = 'tenant';
    END IF;
    IF enqueue.task IS NULL OR length(enqueue.task) NOT BETWEEN 1 AND 128
       OR enqueue.task !~ '^[A-Za-z0-9_.:-]+$' THEN
        RAISE EXCEPTION 'jobfleet.enqueue: task: 1 to 128 of A-Z a-z 0-9 _ . : -, got %',
            quote_nullable(left(enqueue.task, 200))
            USING ERRCODE = 'invalid_parameter_value', COLUMN = 'task';
    END IF;
    IF enqueue.queue IS NULL OR length(enqueue.queue) NOT BETWEEN 1 AND 64
       OR enqueue.queue !~ '^[A-Za-z0-9_.-]+$' THEN
        RAISE EXCEPTION 'jobfleet.enqueue: queue: 1 to 64 of A-Z a-z 0-9 _ . -, got %',
            quote_nullable(left(enqueue.queue, 200))
            USING ERRCODE = 'invalid_parameter_value', COLUMN = 'queue';
    END IF;
    IF enqueue.priority IS NULL OR enqueue.priority NOT BETWEEN 0 AND 9 THEN
        RAISE EXCEPTION 'jobfleet.enqueue: priority: 0 to 9, got %',
            coalesce(enqueue.priority::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value', COLUMN = 'priority';
    END IF;
    IF length(enqueue.idempotency_key) NOT BETWEEN 1 AND 255 THEN
        RAISE EXCEPTION 'jobfleet.enqueue: idempotency_key: 1 to 255 characters, or NULL'
            USING ERRCODE = 'invalid_parameter_value', COLUMN = 'idempotency_key';
    END IF;
    IF enqueue.run_at IS NOT NULL AND enqueue.delay_seconds IS NOT NULL THEN
        RAISE EXCEPTION 'jobfleet.enqueue: give run_at or delay_seconds, not both'
            USING ERRCODE = 'invalid_parameter_value', COLUMN = 'delay_seconds';
    END IF;
    IF enqueue.run_at IS NOT NULL AND NOT (enqueue.run_at >= '0001-01-01 00:00:00+00'
                                           AND enqueue.run_at < '10000-01-01 00:00:00+00') THEN
        RAISE EXCEPTION 'jobfleet.enqueue: run_at: the time in UTC is not in the years 1 to 9999'
            USING ERRCODE = 'invalid_parameter_value', COLUMN = 'run_at';
    END IF;
    -- NaN compares greater than every number in Postgres: it is refused by name.
    IF enqueue.delay_seconds = 'NaN'
       OR enqueue.delay_seconds NOT BETWEEN 0 AND 366 * 86400 THEN
        RAISE EXCEPTION 'jobfleet.enqueue: delay_seconds: 0 to 31622400 (366 days), got %',
            enqueue.delay_seconds
            USING ERRCODE = 'invalid_parameter_value', COLUMN = 'delay_seconds';
    END IF;
    IF enqueue.max_retries NOT BETWEEN 0 AND 100 THEN
        RAISE EXCEPTION 'jobfleet.enqueue: max_retries: 0 to 100, got %', enqueue.max_retries
            USING ERRCODE = 'invalid_parameter_value', COLUMN = 'max_retries';
    END IF;
    IF enqueue.timeout_seconds < 1 THEN
        RAISE EXCEPTION 'jobfleet.enqueue: timeout_seconds: at least 1, got %',
            enqueue.timeout_seconds
            USING ERRCODE = 'invalid_parameter_value', COLUMN = 'timeout_seconds';
    END IF;

    BEGIN
        document := coalesce(enqueue.payload, 'null'::json)::jsonb;
        print := jobfleet.fingerprint(
            enqueue.task, enqueue.payload, enqueue.queue, enqueue.priority, enqueue.run_at,
            enqueue.delay_seconds, enqueue.max_retries, enqueue.timeout_seconds);
    EXCEPTION
        WHEN untranslatable_character OR invalid_text_representation THEN
            RAISE EXCEPTION 'jobfleet.enqueue: payload: %',
                'a string holds a NUL character (\u0000) or a lone UTF-16 surrogate'
                USING ERRCODE = 'invalid_parameter_value', COLUMN = 'payload', DETAIL = SQLERRM;
        WHEN numeric_value_out_of_range THEN
            RAISE EXCEPTION 'jobfleet.enqueue: payload: a number outside the range of a double'
                USING ERRCODE = 'invalid_parameter_value', COLUMN = 'payload', DETAIL = SQLERRM;
        WHEN invalid_parameter_value THEN
            RAISE EXCEPTION 'jobfleet.enqueue: %', SQLERRM
                USING ERRCODE = 'invalid_parameter_value', COLUMN = 'payload';
    END;

    SELECT * INTO defaults FROM jobfleet.job_defaults;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'jobfleet.job_defaults is empty: run python -m app migrate'
            USING ERRCODE = 'object_not_in_prerequisite_state';
    END IF;
    ready_at := CASE
        WHEN enqueue.run_at IS NOT NULL THEN greatest(enqueue.run_at, now())
        WHEN enqueue.delay_seconds > 0 THEN now() + make_interval(secs => enqueue.delay_seconds)
        ELSE now() END;

    -- As the API's submit: ON CONFLICT DO NOTHING waits for a concurrent insert of the same
    -- key to commit, so the read after it finds the winner; a winner deleted in between
    -- leaves the key free, and the insert is tried again.
    FOR attempt IN 1..3 LOOP
        INSERT INTO jobs AS j (id, tenant, queue, task, payload, priority, status,
                               idempotency_key, request_fingerprint, max_retries,
                               timeout_seconds, run_at)
        VALUES (jobfleet.uuid7(), enqueue.tenant, enqueue.queue, enqueue.task, document,
                enqueue.priority,
                CASE WHEN ready_at > now() THEN 'scheduled' ELSE 'queued' END,
                enqueue.idempotency_key, print,
                coalesce(enqueue.max_retries, defaults.max_retries),
                least(coalesce(enqueue.timeout_seconds, defaults.timeout_seconds),
                      defaults.max_timeout_seconds),
                ready_at)
        ON CONFLICT (tenant, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING j.id, j.status INTO job_id, job_status;
        IF FOUND THEN
            created := true;
            PERFORM pg_notify('jobfleet_enqueued', job_id::text);
            RETURN NEXT;
            RETURN;
        END IF;
        SELECT j.id, j.status, j.request_fingerprint INTO job_id, job_status, found_fingerprint
          FROM jobs AS j
         WHERE j.tenant = enqueue.tenant AND j.idempotency_key = enqueue.idempotency_key;
        IF FOUND THEN
            IF found_fingerprint IS DISTINCT FROM print THEN
                RAISE EXCEPTION
                    'jobfleet.enqueue: idempotency key % was used for a different request (job %)',
                    quote_literal(enqueue.idempotency_key), job_id
                    USING ERRCODE = 'unique_violation', COLUMN = 'idempotency_key',
                          CONSTRAINT = 'uq_jobs_tenant_idempotency_key';
            END IF;
            created := false;
            RETURN NEXT;
            RETURN;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'jobfleet.enqueue: the job of idempotency key % kept being deleted',
        quote_literal(enqueue.idempotency_key) USING ERRCODE = 'serialization_failure';
END
$$;

REVOKE ALL ON FUNCTION jobfleet.enqueue(text, text, json, text, integer, text, timestamptz,
                                        double precision, integer, integer) FROM PUBLIC;
"""


def upgrade() -> None:
    bind = op.get_bind()
    tables = bind.dialect.identifier_preparer.quote(bind.scalar(sa.text("SELECT current_schema()")))
    op.execute(_SCHEMA_AND_DEFAULTS)
    op.execute(_UUID7)
    op.execute(_FINGERPRINT)
    op.execute(_ENQUEUE.replace("@tables@", tables))


def downgrade() -> None:
    op.execute("DROP SCHEMA jobfleet CASCADE")
