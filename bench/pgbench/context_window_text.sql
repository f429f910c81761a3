-- context.sh: the window's text face, as the gateway calls it.
SELECT progressdb.context_text('ctx', :budget);
