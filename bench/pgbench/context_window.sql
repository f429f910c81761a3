-- context.sh: the context window of `ctx` within :budget tokens (format :format).
SELECT progressdb.context('ctx', :budget, format => :format)::text;
