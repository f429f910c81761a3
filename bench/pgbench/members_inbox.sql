-- members.sh: one inbox page of 50 (the user's threads, newest activity first), as text.
SELECT progressdb.list_threads(:user, lim => 50)::text;
