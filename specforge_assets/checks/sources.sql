-- Fast path: one structured scan of a source partition's output files (in-memory DuckDB).
-- The files placeholder is a DuckDB list literal of the JSONL paths (train, test); the ws one is the characters
-- Python's str.strip() removes (whitespace-only content counts as empty), and ws_json_regex
-- matches the JSON text of a string made only of those characters (raw or escaped).
-- Fields are read as JSON values so their types can still be checked; a file whose structure
-- does not even fit (e.g. `conversations` is a string) makes this scan fail, and the checks
-- then fall back to sources_generic.sql, which reports those rows precisely.
CREATE TEMP TABLE src AS
WITH raw AS (
    SELECT filename AS file, id AS id_j, text AS text_j, conversations AS conv
    FROM read_json({files}, format = 'newline_delimited', filename = true, maximum_object_size = 268435456,
                   columns = {'id': 'JSON', 'text': 'JSON', 'conversations': 'STRUCT(role JSON, content JSON)[]'})
),
typed AS (
    SELECT
        file,
        json_type(id_j) AS id_type,
        json_extract_string(id_j, '$') AS id,
        json_type(text_j) AS text_type,
        json_extract_string(text_j, '$') AS text,
        text_j,
        conv,
        list_transform(conv, lambda m: json_extract_string(m.role, '$')) AS roles
    FROM raw
)
SELECT
    file,
    id,
    CASE WHEN conv IS NOT NULL THEN 'conversations' WHEN text_type IS NOT NULL THEN 'text' ELSE 'none' END AS kind,
    (
        id_type = 'VARCHAR' AND length(id) > 0 AND (
            (conv IS NOT NULL AND text_type IS NULL
             AND list_bool_and(list_transform(conv, lambda m:
                    coalesce(starts_with(m.role, '"') AND starts_with(m.content, '"'), false))) IS NOT FALSE)
            OR (text_type = 'VARCHAR' AND conv IS NULL)
        )
    ) IS TRUE AS schema_ok,
    CASE
        WHEN conv IS NOT NULL THEN len(conv) = 0 OR list_bool_or(list_transform(conv, lambda m:
            m.content IS NULL OR (
                -- JSON text of a string: "..." ; a first character that is neither whitespace nor an
                -- escape decides at once (almost every row); otherwise test the whole escaped text.
                -- A non-string content is the schema check's business, not this one's.
                starts_with(m.content, '"') AND contains({ws} || '\"', substr(m.content, 2, 1))
                    AND regexp_full_match(m.content, {ws_json_regex})
            ))) IS TRUE
        WHEN text_type = 'VARCHAR' THEN contains({ws} || '\"', substr(text_j, 2, 1)) AND regexp_full_match(text_j, {ws_json_regex})
        ELSE true
    END AS empty_content,
    CASE
        WHEN conv IS NOT NULL THEN (
            len(roles) > lead_sys(roles)
            AND (list_bool_and(list_transform(roles[lead_sys(roles) + 1:],
                lambda r, i: r IS NOT DISTINCT FROM CASE WHEN i % 2 = 1 THEN 'user' ELSE 'assistant' END)) IS TRUE
            -- or a prompt-only row (user turns only; the regenerated layer fills the answers)
            OR list_bool_and(list_transform(roles[lead_sys(roles) + 1:], lambda r: r IS NOT DISTINCT FROM 'user')) IS TRUE)
        )
        ELSE true
    END AS order_ok,
    hash(conv, text) AS content_hash
FROM typed;
