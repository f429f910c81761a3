-- Dataset for bench/members.sh: members, read state and the inbox (0.2).
-- Loaded through the SQL API only (create_thread, add_member, post_message,
-- mark_read), one set-based statement per step.
--
-- psql variables:
--   threads  threads th1..thN, owned by user<i % 1000>
--   stride   inbox_user is a member of every stride-th thread (threads/stride of them)
--   flood    comma-separated unread counts of the "flood" inbox threads (e.g. 1200,2000,3000)
--   recent   how many inbox threads (and as many others) get the newest activity
--   big      members of thread `big` (owner big_owner + bigm1..bigm<big-1>)
--   long     messages in thread `long` (owner long_owner, member long_member)
--   seed     setseed() value
--
-- Steps, in this order (post_message stamps last_activity_ts with the clock,
-- so this order is the activity order):
--   1. threads; 2. memberships (owner, two other users, and inbox_user for
--   every stride-th thread); 3. 1-8 messages per thread (mostly few) by its
--   members, in random order across threads; 4. inbox_user reads all of their
--   threads (unread 0); 5. flood threads: inbox threads 1..k get that many
--   messages by others; 6. `long`, `big`, `small`; 7. recent activity: 1-3
--   messages by others in `recent` random inbox threads and as many others,
--   in random order. So the first inbox page holds threads with 1-3 unread,
--   the flood threads report unread capped at 1,000, the rest 0; 8. quiet_user
--   joins the threads/stride least recently active threads.
\set ON_ERROR_STOP 1
SET max_parallel_workers_per_gather = 0;

CREATE SCHEMA bench;
SELECT setseed(:seed);

CREATE FUNCTION bench.body(i bigint, j bigint) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('text', left(repeat('lorem ipsum dolor sit amet, the deploy failed again ', 12),
                                           (40 + (i * 31 + j * 17) % 500)::integer))
$$;

-- 1. threads
SELECT count(progressdb.create_thread(author => 'user' || (i % 1000), title => 'Thread ' || i, id => 'th' || i))
  FROM generate_series(1, :threads) i;

-- 2. memberships: two more users in every thread, inbox_user in every stride-th one
SELECT count(progressdb.add_member('th' || i, 'user' || ((i + 337) % 1000), 'member')),
       count(progressdb.add_member('th' || i, 'user' || ((i + 671) % 1000), 'member'))
  FROM generate_series(1, :threads) i;
SELECT count(progressdb.add_member('th' || (k * :stride), 'inbox_user', 'member'))
  FROM generate_series(1, :threads / :stride) k;

-- 3. 1-8 messages per thread (mean ~3.7), authors rotating over its members,
-- threads interleaved in random order
SELECT count(progressdb.post_message(p.thread, p.author, bench.body(p.i, p.j)))
  FROM (SELECT 'th' || t.i AS thread, t.i, j,
               CASE (t.i + j) % 4
                   WHEN 0 THEN 'user' || (t.i % 1000)
                   WHEN 1 THEN 'user' || ((t.i + 337) % 1000)
                   WHEN 2 THEN 'user' || ((t.i + 671) % 1000)
                   ELSE CASE WHEN t.i % :stride = 0 THEN 'inbox_user' ELSE 'user' || (t.i % 1000) END
               END AS author,
               random() AS r
          FROM (SELECT i, 1 + floor(8 * random() ^ 2)::int AS n FROM generate_series(1, :threads) i) t,
               generate_series(1, t.n) j
         ORDER BY r) p;

-- 4. inbox_user has read everything so far
SELECT count(progressdb.mark_read('th' || (k * :stride), NULL, 'inbox_user'))
  FROM generate_series(1, :threads / :stride) k;

-- 5. flood threads: the first inbox threads get many messages by others
SELECT count(progressdb.post_message(p.thread, p.author, bench.body(p.k, p.j)))
  FROM (SELECT 'th' || (f.k * :stride) AS thread, f.k, j,
               'user' || ((f.k * :stride + CASE j % 3 WHEN 0 THEN 0 WHEN 1 THEN 337 ELSE 671 END) % 1000) AS author
          FROM unnest(string_to_array(:'flood', ',')::int[]) WITH ORDINALITY f(n, k),
               generate_series(1, f.n) j
         ORDER BY f.k, j) p;

-- 6. a long history, a thread with many members, a thread with one
SELECT progressdb.create_thread(author => 'long_owner', title => 'Long history', id => 'long') IS NOT NULL;
SELECT progressdb.add_member('long', 'long_member', 'member') IS NOT NULL;
SELECT count(progressdb.post_message('long', CASE j % 3 WHEN 0 THEN 'long_owner' WHEN 1 THEN 'long_member'
                                                         ELSE 'user' || (j % 1000) END, bench.body(j, 7)))
  FROM generate_series(1, :long) j;
SELECT progressdb.create_thread(author => 'big_owner', title => 'Many members', id => 'big') IS NOT NULL;
SELECT count(progressdb.add_member('big', 'bigm' || k, 'member')) FROM generate_series(1, :big - 1) k;
SELECT progressdb.create_thread(author => 'small_owner', title => 'One member', id => 'small') IS NOT NULL;
SELECT count(progressdb.post_message('big', 'bigm' || (j % (:big - 1) + 1), bench.body(j, 3))),
       count(progressdb.post_message('small', 'small_owner', bench.body(j, 5)))
  FROM generate_series(1, 20) j;

-- 7. recent activity: `recent` random inbox threads (not the flood ones) and
-- as many other threads get 1-3 messages by others, in random order
SELECT count(progressdb.post_message(p.thread, p.author, bench.body(p.i, p.j)))
  FROM (SELECT 'th' || s.i AS thread, s.i, j, 'user' || ((s.i + 337) % 1000) AS author, random() AS r
          FROM (SELECT i, 1 + floor(3 * random())::int AS n
                  FROM (SELECT k * :stride AS i
                          FROM generate_series(cardinality(string_to_array(:'flood', ',')) + 1, :threads / :stride) k
                         ORDER BY random() LIMIT :recent) a
                UNION ALL
                SELECT i, 1 + floor(3 * random())::int
                  FROM (SELECT i FROM generate_series(1, :threads) i WHERE i % :stride <> 0
                         ORDER BY random() LIMIT :recent) b) s,
               generate_series(1, s.n) j
         ORDER BY r) p;

-- 8. quiet_user: a member of as many threads as inbox_user, the least
-- recently active ones (joining does not change a thread's activity)
SELECT count(progressdb.add_member(t.id, 'quiet_user', 'member'))
  FROM (SELECT th.id FROM progressdb.threads th ORDER BY th.last_activity_ts, th.id LIMIT :threads / :stride) t;

-- inbox_user's unread counts, through the API (list_threads, 1,000 per page)
CREATE FUNCTION bench.inbox_unread() RETURNS TABLE (thread text, unread integer, activity bigint)
LANGUAGE plpgsql AS $$
DECLARE
    page jsonb;
    cur text;
    cur_ts bigint;
BEGIN
    LOOP
        page := progressdb.list_threads('inbox_user', lim => 1000, before => cur, before_ts => cur_ts) -> 'threads';
        EXIT WHEN jsonb_array_length(page) = 0;
        RETURN QUERY SELECT e ->> 'id', (e ->> 'unread')::integer, (e ->> 'last_activity_ts')::bigint
                       FROM jsonb_array_elements(page) e;
        cur := page -> -1 ->> 'id';
        cur_ts := (page -> -1 ->> 'last_activity_ts')::bigint;
    END LOOP;
END
$$;

-- Unread messages of inbox_user in a thread, counted in full from the tables
-- (the API stops at 1,000).
CREATE FUNCTION bench.true_unread(thread_id text) RETURNS bigint
LANGUAGE sql STABLE AS $$
    SELECT count(*) FROM progressdb.messages m
      JOIN progressdb.thread_members mm ON mm.thread = m.thread AND mm.user_id = 'inbox_user'
     WHERE m.thread = thread_id AND m.seq > mm.last_read_seq AND m.deleted_ts IS NULL
       AND m.author <> 'inbox_user'
$$;
