-- The Message document, rendered by one function (src/render.rs) from a
-- stored row. Encrypted bodies are opened there, so every reader returns
-- plaintext. Plain SQL functions: the planner inlines them into the caller's
-- query, which passes the columns straight to the renderer.

CREATE FUNCTION progressdb._message_text(m progressdb.messages) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT progressdb._render_message(m.id, m.thread, m.author, m.role, m.ts, m.body::text, m.body_enc,
                                      m.version, m.updated_ts, m.reply_to, m.deleted_ts,
                                      CASE WHEN m.reactions <> '{}'::jsonb THEN m.reactions::text END)
$$;

-- The same document as jsonb, for the SQL API's jsonb functions.
CREATE FUNCTION progressdb._message_json(m progressdb.messages) RETURNS jsonb
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT progressdb._message_text(m)::jsonb
$$;
