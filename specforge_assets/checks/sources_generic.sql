-- Slow, fully general path (used when a file is not even structurally a conversation file,
-- e.g. `conversations` is a string in some row): every JSON field is typed per row.
-- The files placeholder is replaced with a DuckDB list literal of the JSONL paths (train, test).
CREATE TEMP TABLE src AS
WITH raw AS (
    SELECT filename AS file, json AS j
    FROM read_ndjson_objects({files}, filename = true, maximum_object_size = 268435456)
),
typed AS (
    SELECT
        file,
        json_type(j, '$.id') AS id_type,
        json_extract_string(j, '$.id') AS id,
        json_type(j, '$.conversations') AS conv_type,
        json_type(j, '$.text') AS text_type,
        json_extract_string(j, '$.text') AS text,
        json_type(j, '$.conversations[*]') AS msg_types,
        json_type(j, '$.conversations[*].role') AS role_types,
        json_type(j, '$.conversations[*].content') AS content_types,
        json_extract_string(j, '$.conversations[*].role') AS roles,
        json_extract_string(j, '$.conversations[*].content') AS contents,
        json_extract(j, '$.conversations') AS conv_json
    FROM raw
)
SELECT
    file,
    id,
    CASE WHEN conv_type IS NOT NULL THEN 'conversations' WHEN text_type IS NOT NULL THEN 'text' ELSE 'none' END AS kind,
    (
        id_type = 'VARCHAR' AND length(id) > 0 AND (
            (conv_type = 'ARRAY' AND text_type IS NULL
             AND list_bool_and(list_transform(msg_types, lambda t: t = 'OBJECT')) IS NOT FALSE
             AND len(role_types) = len(msg_types) AND len(content_types) = len(msg_types)
             AND list_bool_and(list_transform(role_types, lambda t: t = 'VARCHAR')) IS NOT FALSE
             AND list_bool_and(list_transform(content_types, lambda t: t = 'VARCHAR')) IS NOT FALSE)
            OR (text_type = 'VARCHAR' AND conv_type IS NULL)
        )
    ) IS TRUE AS schema_ok,
    CASE
        WHEN conv_type = 'ARRAY' THEN len(msg_types) = 0 OR coalesce(list_bool_or(list_transform(
            contents, lambda c: c IS NULL OR length(trim(c, {ws})) = 0)), false)
            OR len(content_types) < len(msg_types)
        WHEN text_type = 'VARCHAR' THEN length(trim(text, {ws})) = 0
        ELSE true
    END AS empty_content,
    CASE
        WHEN conv_type = 'ARRAY' THEN (
            len(roles) = len(msg_types)
            AND len(roles) > lead_sys(roles)
            AND (list_bool_and(list_transform(roles[lead_sys(roles) + 1:],
                lambda r, i: r = CASE WHEN i % 2 = 1 THEN 'user' ELSE 'assistant' END)) IS TRUE
            -- or a prompt-only row (user turns only; the regenerated layer fills the answers)
            OR list_bool_and(list_transform(roles[lead_sys(roles) + 1:], lambda r: r = 'user')) IS TRUE)
        )
        ELSE true
    END AS order_ok,
    hash(CAST(conv_json AS VARCHAR), text) AS content_hash
FROM typed;
