-- encrypted-vs-plain hook: append into thread <prefix><i> (prefix enc = encrypted, pln = plain), text face.
\set tid random(1, :nenc)
\set owner :tid % 1000
\set len random(100, 2000)
SELECT progressdb.post_message_text(:prefix || :tid, 'user' || :owner,
       jsonb_build_object('text', left(repeat('lorem ipsum dolor sit amet consectetur ', 52), :len)));
