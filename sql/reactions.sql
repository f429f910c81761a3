-- Reactions: one per identity per message, the latest wins. Stored on the
-- message row (identity -> reaction) so timeline reads need no join; changing
-- them is not a content change and makes no version.

CREATE FUNCTION progressdb.add_reaction(id text, identity text, reaction text, actor text DEFAULT NULL,
                                        in_thread text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    m progressdb.messages;
BEGIN
    identity := progressdb._ident('identity', identity);
    reaction := progressdb._text('reaction', reaction, 64);
    PERFORM progressdb._share_user(identity);   -- see erase_user (lifecycle.sql)
    m := progressdb._message_access(add_reaction.id, in_thread, false, actor, 'react');
    m := progressdb._lock_message(m);
    PERFORM progressdb._acting(actor);
    UPDATE progressdb.messages mm
       SET reactions = mm.reactions || jsonb_build_object(add_reaction.identity, add_reaction.reaction)
     WHERE mm.thread = m.thread AND mm.seq = m.seq
    RETURNING mm.* INTO m;
    RETURN progressdb._message_json(m);
END
$$;

CREATE FUNCTION progressdb.remove_reaction(id text, identity text, actor text DEFAULT NULL,
                                           in_thread text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m progressdb.messages;
BEGIN
    identity := progressdb._ident('identity', identity);
    m := progressdb._message_access(remove_reaction.id, in_thread, false, actor, 'react');
    m := progressdb._lock_message(m);
    PERFORM progressdb._acting(actor);
    -- Removing a reaction that is not there changes nothing (idempotent).
    UPDATE progressdb.messages mm SET reactions = mm.reactions - remove_reaction.identity
     WHERE mm.thread = m.thread AND mm.seq = m.seq AND mm.reactions ? remove_reaction.identity;
END
$$;

CREATE FUNCTION progressdb.reactions(id text, actor text DEFAULT NULL, in_thread text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    m progressdb.messages := progressdb._message_access(reactions.id, in_thread, false, actor, 'read');
BEGIN
    RETURN jsonb_build_object('id', m.id, 'reactions',
        (SELECT coalesce(jsonb_agg(jsonb_build_object('id', r.key, 'reaction', r.value)
                                   ORDER BY r.key COLLATE "C"), '[]')
           FROM jsonb_each_text(m.reactions) r));
END
$$;
