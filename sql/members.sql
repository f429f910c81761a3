-- Members, roles and read state (API.md, release 0.2).
--
-- A thread's members each have a role: reader < member < admin < owner.
-- `_authorize` below is the one place that decides "may this actor do X in
-- this thread"; every function taking an `actor` goes through it. A NULL
-- actor is the trusted service and may do everything.

-- Roles in order of power (NULL for anything else).
CREATE FUNCTION progressdb._role_rank(role text) RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE role WHEN 'reader' THEN 1 WHEN 'member' THEN 2 WHEN 'admin' THEN 3 WHEN 'owner' THEN 4 END
$$;

-- A role given by a caller: one of the four, else 22023.
CREATE FUNCTION progressdb._member_role(role text) RETURNS text
LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    IF progressdb._role_rank(role) IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023',
            MESSAGE = format('role must be one of reader, member, admin, owner (got %s)', coalesce(role, 'null'));
    END IF;
    RETURN role;
END
$$;

-- History visibility: the seq after which `mem` reads the timeline (0: all
-- of it). With history 'joined' a member reads only what was posted since
-- they (last) joined; owners, and the service (mem NULL), read everything.
CREATE FUNCTION progressdb._visible_after(t progressdb.threads, mem progressdb.thread_members)
RETURNS bigint
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN t.history = 'joined' AND mem.role IS DISTINCT FROM 'owner'
                     AND mem.user_id IS NOT NULL
                THEN mem.joined_seq ELSE 0 END
$$;

-- May `actor` do `action` in thread `t`? Raises 42501 when not; returns the
-- seq after which the actor reads the timeline (see _visible_after).
--
-- action         needs
-- read           reader     (timeline, versions, replies, reactions, members)
-- mark_read      reader
-- post, react    member
-- edit           member, and the message is the actor's own (target_author)
-- delete/restore member for their own message, admin for anyone's (moderation)
-- update         admin      (rename, metadata)
-- members        admin      (add/remove readers and members)
-- admins         owner      (add/remove/change admins and owners)
-- history        owner      (change the history setting)
-- delete_thread  owner
-- purge          admin      (hard delete of a message, lifecycle.sql)
-- purge_thread   owner      (hard delete of the thread)
-- lifecycle      owner      (retention, legal hold)
CREATE FUNCTION progressdb._authorize(t progressdb.threads, actor text, action text,
                                      target_author text DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql STABLE AS $$
DECLARE
    mem progressdb.thread_members;
    own constant boolean := target_author IS NOT NULL AND target_author = actor;
    need integer;
BEGIN
    IF actor IS NULL THEN
        RETURN 0;
    END IF;
    need := CASE action
        WHEN 'read' THEN 1
        WHEN 'mark_read' THEN 1
        WHEN 'post' THEN 2
        WHEN 'react' THEN 2
        WHEN 'edit' THEN CASE WHEN own THEN 2 ELSE 5 END
        WHEN 'delete' THEN CASE WHEN own THEN 2 ELSE 3 END
        WHEN 'restore' THEN CASE WHEN own THEN 2 ELSE 3 END
        WHEN 'update' THEN 3
        WHEN 'members' THEN 3
        WHEN 'admins' THEN 4
        WHEN 'history' THEN 4
        WHEN 'delete_thread' THEN 4
        WHEN 'purge' THEN 3
        WHEN 'purge_thread' THEN 4
        WHEN 'lifecycle' THEN 4
    END;
    IF need IS NULL THEN
        RAISE EXCEPTION 'progressdb._authorize: unknown action %', action;
    END IF;
    SELECT * INTO mem FROM progressdb.thread_members mm WHERE mm.thread = t.id AND mm.user_id = actor;
    IF mem.user_id IS NULL OR progressdb._role_rank(mem.role) < need THEN
        RAISE EXCEPTION USING ERRCODE = '42501', MESSAGE = format('user %s may not %s thread %s', actor,
            CASE action
                WHEN 'read' THEN 'read'
                WHEN 'mark_read' THEN 'read'
                WHEN 'post' THEN 'post to'
                WHEN 'react' THEN 'react in'
                WHEN 'edit' THEN 'edit this message of'
                WHEN 'delete' THEN 'delete this message of'
                WHEN 'restore' THEN 'restore this message of'
                WHEN 'update' THEN 'change'
                WHEN 'members' THEN 'manage the members of'
                WHEN 'admins' THEN 'manage the admins and owners of'
                WHEN 'history' THEN 'change the history setting of'
                WHEN 'purge' THEN 'purge messages of'
                WHEN 'purge_thread' THEN 'purge'
                WHEN 'lifecycle' THEN 'change the retention or legal hold of'
                ELSE 'delete'
            END, t.id);
    END IF;
    RETURN progressdb._visible_after(t, mem);
END
$$;

-- The actor's membership of a thread (all NULL when none or for the service).
CREATE FUNCTION progressdb._membership(thread_id text, actor text) RETURNS progressdb.thread_members
LANGUAGE sql STABLE AS $$
    SELECT mm FROM progressdb.thread_members mm WHERE mm.thread = thread_id AND mm.user_id = actor
$$;

-- Unread messages of a member: visible, not deleted, written by others,
-- after their read position. Counted over that range only (an index range
-- scan), and at most 1,000: a long-unread thread costs no more than that.
-- PL/pgSQL so the count's plan is made once per session.
CREATE FUNCTION progressdb._unread(t progressdb.threads, mem progressdb.thread_members) RETURNS integer
LANGUAGE plpgsql STABLE AS $$
DECLARE
    n integer;
BEGIN
    SELECT count(*)::integer INTO n FROM (
        SELECT 1 FROM progressdb.messages m
         WHERE m.thread = t.id
           AND m.seq > greatest(mem.last_read_seq, progressdb._visible_after(t, mem))
           AND m.deleted_ts IS NULL AND m.author <> mem.user_id
         ORDER BY m.seq
         LIMIT 1000) x;
    RETURN n;
END
$$;

-- The Member document (API.md); added_by is omitted when the service added them.
CREATE FUNCTION progressdb._member_json(mem progressdb.thread_members) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('thread', mem.thread, 'user', mem.user_id, 'role', mem.role,
                              'joined_ts', mem.joined_ts)
        || CASE WHEN mem.added_by IS NULL THEN '{}'::jsonb ELSE jsonb_build_object('added_by', mem.added_by) END
$$;

-- Makes `member` a member of thread `t` (a new row; the caller checked it is
-- not one). Read state starts where they join: earlier messages are not unread.
CREATE FUNCTION progressdb._insert_member(t progressdb.threads, member text, role text, added_by text)
RETURNS progressdb.thread_members
LANGUAGE plpgsql AS $$
DECLARE
    mem progressdb.thread_members;
BEGIN
    INSERT INTO progressdb.thread_members AS mm
           (thread, user_id, role, joined_ts, joined_seq, added_by, last_read_seq)
    VALUES (t.id, member, role, progressdb.now_ns(), t.last_seq, added_by, t.last_seq)
    RETURNING mm.* INTO mem;
    UPDATE progressdb.threads th SET member_count = th.member_count + 1 WHERE th.id = t.id;
    RETURN mem;
END
$$;

-- Loads a live thread locked against concurrent membership changes (they
-- check "at least one owner" and keep member_count).
CREATE FUNCTION progressdb._thread_for_members(thread_id text) RETURNS progressdb.threads
LANGUAGE plpgsql AS $$
DECLARE
    t progressdb.threads;
BEGIN
    SELECT * INTO t FROM progressdb.threads th
     WHERE th.id = progressdb._ident('thread id', thread_id) AND th.deleted_ts IS NULL
       FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002', MESSAGE = format('thread %s not found', thread_id);
    END IF;
    RETURN t;
END
$$;

-- Fails with 55000 (HTTP 409) when `mem` is the thread's only owner.
CREATE FUNCTION progressdb._keep_an_owner(mem progressdb.thread_members) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF mem.role = 'owner' AND NOT EXISTS (
        SELECT 1 FROM progressdb.thread_members mm
         WHERE mm.thread = mem.thread AND mm.role = 'owner' AND mm.user_id <> mem.user_id) THEN
        RAISE EXCEPTION USING ERRCODE = '55000',
            MESSAGE = format('thread %s must keep at least one owner (%s is the last)', mem.thread, mem.user_id);
    END IF;
END
$$;

CREATE FUNCTION progressdb.add_member(thread text, member text, role text DEFAULT 'member',
                                      actor text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    new_role text;
    t progressdb.threads;
    old progressdb.thread_members;
    mem progressdb.thread_members;
BEGIN
    member := progressdb._ident('member', member);
    new_role := progressdb._member_role(coalesce(add_member.role, 'member'));
    t := progressdb._thread_for_members(add_member.thread);
    old := progressdb._membership(t.id, member);
    -- Readers and members are an admin's business; admins and owners, an owner's.
    PERFORM progressdb._authorize(t, actor,
        CASE WHEN new_role IN ('admin', 'owner') OR old.role IN ('admin', 'owner') THEN 'admins' ELSE 'members' END);
    PERFORM progressdb._acting(actor);
    IF old.user_id IS NULL THEN
        mem := progressdb._insert_member(t, member, new_role, actor);
    ELSIF old.role = new_role THEN
        mem := old;
    ELSE
        PERFORM progressdb._keep_an_owner(old);
        UPDATE progressdb.thread_members mm SET role = new_role
         WHERE mm.thread = t.id AND mm.user_id = member
        RETURNING mm.* INTO mem;
    END IF;
    RETURN progressdb._member_json(mem);
END
$$;

CREATE FUNCTION progressdb.remove_member(thread text, member text, actor text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t progressdb.threads;
    old progressdb.thread_members;
BEGIN
    member := progressdb._ident('member', member);
    t := progressdb._thread_for_members(remove_member.thread);
    IF actor IS DISTINCT FROM member THEN
        -- Outsiders learn nothing about who is a member.
        PERFORM progressdb._authorize(t, actor, 'read');
    END IF;
    old := progressdb._membership(t.id, member);
    IF old.user_id IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = 'P0002',
            MESSAGE = format('user %s is not a member of thread %s', member, t.id);
    END IF;
    IF actor IS DISTINCT FROM member THEN
        -- Anyone may leave; removing someone else takes the power over their role.
        PERFORM progressdb._authorize(t, actor,
            CASE WHEN old.role IN ('admin', 'owner') THEN 'admins' ELSE 'members' END);
    END IF;
    PERFORM progressdb._keep_an_owner(old);
    PERFORM progressdb._acting(actor);
    DELETE FROM progressdb.thread_members mm WHERE mm.thread = t.id AND mm.user_id = member;
    UPDATE progressdb.threads th SET member_count = th.member_count - 1 WHERE th.id = t.id;
END
$$;

CREATE FUNCTION progressdb.list_members(thread text, actor text DEFAULT NULL, lim integer DEFAULT 100,
                                        after text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    t progressdb.threads := progressdb._thread_for(list_members.thread, actor);
    result jsonb;
BEGIN
    lim := progressdb._limit(lim);
    SELECT coalesce(jsonb_agg(progressdb._member_json(m) ORDER BY m.user_id), '[]') INTO result
      FROM (SELECT * FROM progressdb.thread_members mm
             WHERE mm.thread = t.id AND (after IS NULL OR mm.user_id > after)
             ORDER BY mm.user_id
             LIMIT lim) m;
    RETURN jsonb_build_object('thread', t.id, 'members', result);
END
$$;

-- Read state of the actor: moves to `message` (NULL: the newest visible
-- message), never backwards.
CREATE FUNCTION progressdb.mark_read(thread text, message text DEFAULT NULL, actor text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    t progressdb.threads;
    vis bigint;
    target_seq bigint := 0;
    target_id text;
    mem progressdb.thread_members;
BEGIN
    IF actor IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22004', MESSAGE = 'actor is required: read state belongs to a member';
    END IF;
    t := progressdb._thread_for(mark_read.thread, NULL);
    vis := progressdb._authorize(t, actor, 'mark_read');
    IF message IS NULL AND t.fork_of IS NOT NULL THEN
        -- A fork's newest message may be one it shares (forks.sql).
        SELECT m.seq, m.id INTO target_seq, target_id
          FROM progressdb._fork_rows(t, vis, 9223372036854775807, 1, true, false) m;
    ELSIF message IS NULL THEN
        SELECT m.seq, m.id INTO target_seq, target_id FROM progressdb.messages m
         WHERE m.thread = t.id AND m.seq > vis AND m.deleted_ts IS NULL
         ORDER BY m.seq DESC LIMIT 1;
    ELSE
        SELECT m.seq, m.id INTO target_seq, target_id FROM progressdb.messages m
         WHERE m.id = progressdb._ident('message id', message) AND m.thread = t.id AND m.seq > vis
         LIMIT 1;
        IF NOT FOUND AND t.fork_of IS NOT NULL THEN
            SELECT m.seq, m.id INTO target_seq, target_id FROM progressdb._fork_message(t, message) m
             WHERE m.seq > vis;
        END IF;
        IF target_id IS NULL THEN
            RAISE EXCEPTION USING ERRCODE = 'P0002',
                MESSAGE = format('message %s not found in thread %s', message, t.id);
        END IF;
    END IF;
    PERFORM progressdb._acting(actor);
    -- greatest() is evaluated on the newest row version: concurrent calls
    -- cannot move the position backwards.
    UPDATE progressdb.thread_members mm
       SET last_read = CASE WHEN coalesce(target_seq, 0) > mm.last_read_seq THEN target_id ELSE mm.last_read END,
           last_read_seq = greatest(mm.last_read_seq, coalesce(target_seq, 0))
     WHERE mm.thread = t.id AND mm.user_id = actor
    RETURNING mm.* INTO mem;
    RETURN jsonb_build_object('thread', t.id, 'user', actor, 'last_read', mem.last_read,
                              'unread', progressdb._unread(t, mem));
END
$$;
