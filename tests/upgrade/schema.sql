-- Catalog listing of everything the progressdb extension owns, one sorted
-- line per fact, for comparing an upgraded database with a fresh install
-- (tests/upgrade/run.sh diffs the two listings). pg_dump --schema-only is no
-- use here: it prints extension members as a bare CREATE EXTENSION.
--
-- Nothing owner-, OID- or data-dependent is printed (no owners, no sequence
-- values); ACLs are printed as stored (both databases have the same owner).
-- Columns are listed by their logical position among live columns, so a
-- column dropped by an upgrade script does not show, but column order does:
-- a column an upgrade adds with ALTER TABLE ... ADD COLUMN lands last, so a
-- fresh install must declare it last too.
--
-- Run with psql -AtX; every row is "<section> | <object> | <fact>".

\set ON_ERROR_STOP on

WITH ext AS (
    SELECT oid, extnamespace FROM pg_extension WHERE extname = 'progressdb'
),
-- Relations (tables, indexes, sequences, views, composite types) of the
-- extension's schema.
rel AS (
    SELECT c.*, c.oid::regclass::text AS name
    FROM pg_class c, ext
    WHERE c.relnamespace = ext.extnamespace
),
-- Functions and procedures of the extension's schema.
fn AS (
    SELECT p.*, p.oid::regprocedure::text AS name
    FROM pg_proc p, ext
    WHERE p.pronamespace = ext.extnamespace
),
-- Types of the extension's schema, without the implicit ones (row types of
-- tables, views and sequences, and array types).
typ AS (
    SELECT t.*, format_type(t.oid, NULL) AS name
    FROM pg_type t, ext
    WHERE t.typnamespace = ext.extnamespace
      AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')
      AND NOT (t.typcategory = 'A' AND t.typelem <> 0)
),
facts(section, object, fact) AS (
    -- The extension itself.
    SELECT 'extension', 'progressdb',
           format('version=%s schema=%s relocatable=%s', e.extversion,
                  e.extnamespace::regnamespace, e.extrelocatable)
    FROM pg_extension e WHERE e.extname = 'progressdb'

    -- pg_extension_config_dump marks (the order of calls does not matter).
    UNION ALL
    SELECT 'config_dump', cfg.relid::regclass::text, format('condition=%L', cfg.cond)
    FROM pg_extension e,
         unnest(e.extconfig, e.extcondition) AS cfg(relid, cond)
    WHERE e.extname = 'progressdb'

    -- Every member object of the extension.
    UNION ALL
    SELECT 'member', pg_describe_object(d.classid, d.objid, d.objsubid), ''
    FROM pg_depend d, ext
    WHERE d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid AND d.deptype = 'e'

    -- Relations: kind, persistence, options, access method, RLS, ACL.
    UNION ALL
    SELECT 'relation', r.name,
           format('kind=%s persistence=%s am=%s options=%s replident=%s rls=%s/%s partkey=%s acl=%s',
                  r.relkind, r.relpersistence,
                  (SELECT amname FROM pg_am WHERE oid = r.relam), r.reloptions,
                  r.relreplident, r.relrowsecurity, r.relforcerowsecurity,
                  CASE WHEN r.relkind = 'p' THEN pg_get_partkeydef(r.oid) END,
                  r.relacl)
    FROM rel r

    -- Inheritance / partitions.
    UNION ALL
    SELECT 'inherits', r.name, format('%s #%s', i.inhparent::regclass, i.inhseqno)
    FROM rel r JOIN pg_inherits i ON i.inhrelid = r.oid

    -- Columns in logical order (dropped ones left out, see above).
    UNION ALL
    SELECT 'column', r.name,
           format('%3s. %I %s notnull=%s default=%s storage=%s compression=%s identity=%s generated=%s collation=%s stattarget=%s options=%s acl=%s',
                  row_number() OVER (PARTITION BY a.attrelid ORDER BY a.attnum),
                  a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
                  pg_get_expr(ad.adbin, ad.adrelid), a.attstorage, a.attcompression,
                  a.attidentity, a.attgenerated,
                  CASE WHEN a.attcollation <> 0 THEN a.attcollation::regcollation::text END,
                  a.attstattarget,
                  -- This server build stores a per-table "pg_attver=<n>"
                  -- in every column's options; it is no part of the schema.
                  ARRAY(SELECT o FROM unnest(a.attoptions) o WHERE o NOT LIKE 'pg\_attver=%'),
                  a.attacl)
    FROM rel r
    JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
    LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
    WHERE r.relkind IN ('r', 'p', 'v', 'm', 'f', 'c')

    -- Constraints of tables and domains.
    UNION ALL
    SELECT 'constraint',
           CASE WHEN con.conrelid <> 0 THEN con.conrelid::regclass::text ELSE format_type(con.contypid, NULL) END,
           format('%I %s', con.conname, pg_get_constraintdef(con.oid))
    FROM pg_constraint con, ext
    WHERE con.connamespace = ext.extnamespace

    -- Indexes (the definition names the index, its table, method, keys,
    -- INCLUDE, predicate and storage options).
    UNION ALL
    SELECT 'index', i.indrelid::regclass::text,
           format('%s clustered=%s replident=%s', pg_get_indexdef(i.indexrelid),
                  i.indisclustered, i.indisreplident)
    FROM rel r JOIN pg_index i ON i.indexrelid = r.oid

    -- Sequences: parameters and owning column, never their values.
    UNION ALL
    SELECT 'sequence', r.name,
           format('type=%s start=%s increment=%s min=%s max=%s cache=%s cycle=%s owned_by=%s',
                  format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin,
                  s.seqmax, s.seqcache, s.seqcycle,
                  (SELECT format('%s.%I', d.refobjid::regclass, a.attname)
                   FROM pg_depend d
                   JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                   WHERE d.classid = 'pg_class'::regclass AND d.objid = r.oid
                     AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')))
    FROM rel r JOIN pg_sequence s ON s.seqrelid = r.oid

    -- Views and materialized views.
    UNION ALL
    SELECT 'view', r.name, pg_get_viewdef(r.oid)
    FROM rel r WHERE r.relkind IN ('v', 'm')

    -- Triggers (internal ones belong to constraints, listed above).
    UNION ALL
    SELECT 'trigger', t.tgrelid::regclass::text,
           format('%s enabled=%s', pg_get_triggerdef(t.oid), t.tgenabled)
    FROM rel r JOIN pg_trigger t ON t.tgrelid = r.oid AND NOT t.tgisinternal

    -- Rules other than views' own.
    UNION ALL
    SELECT 'rule', r.name, pg_get_ruledef(ru.oid)
    FROM rel r JOIN pg_rewrite ru ON ru.ev_class = r.oid AND ru.rulename <> '_RETURN'

    -- Row-level security policies.
    UNION ALL
    SELECT 'policy', r.name,
           format('%I cmd=%s permissive=%s roles=%s using=%s check=%s', po.polname,
                  po.polcmd, po.polpermissive,
                  (SELECT string_agg(CASE WHEN ro = 0 THEN 'public' ELSE ro::regrole::text END, ',' ORDER BY 1)
                   FROM unnest(po.polroles) ro),
                  pg_get_expr(po.polqual, po.polrelid), pg_get_expr(po.polwithcheck, po.polrelid))
    FROM rel r JOIN pg_policy po ON po.polrelid = r.oid

    -- Functions: the full definition (language, volatility, strictness,
    -- security, parallel safety, cost, rows, SET options, body), plus ACL.
    UNION ALL
    SELECT 'function', f.name,
           CASE WHEN f.prokind = 'a'
                THEN format('aggregate returns %s', format_type(f.prorettype, NULL))
                ELSE pg_get_functiondef(f.oid) END
    FROM fn f
    UNION ALL
    SELECT 'function_acl', f.name, format('acl=%s leakproof=%s', f.proacl, f.proleakproof)
    FROM fn f

    -- Types: domains, enums, composite and base types, ranges.
    UNION ALL
    SELECT 'type', t.name,
           format('type=%s base=%s notnull=%s default=%s collation=%s len=%s byval=%s align=%s storage=%s io=%s/%s/%s/%s acl=%s',
                  t.typtype, CASE WHEN t.typbasetype <> 0 THEN format_type(t.typbasetype, t.typtypmod) END,
                  t.typnotnull, t.typdefault,
                  CASE WHEN t.typcollation <> 0 THEN t.typcollation::regcollation::text END,
                  t.typlen, t.typbyval, t.typalign, t.typstorage,
                  t.typinput, t.typoutput, t.typreceive, t.typsend, t.typacl)
    FROM typ t
    UNION ALL
    SELECT 'enum', t.name, string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
    FROM typ t JOIN pg_enum e ON e.enumtypid = t.oid
    GROUP BY t.name
    UNION ALL
    SELECT 'range', t.name, format('subtype=%s', format_type(rg.rngsubtype, NULL))
    FROM typ t JOIN pg_range rg ON rg.rngtypid = t.oid

    -- Comments on the schema's objects and their columns.
    UNION ALL
    SELECT 'comment', pg_describe_object(d.classoid, d.objoid, d.objsubid), d.description
    FROM pg_description d, ext
    WHERE (d.classoid = 'pg_class'::regclass AND d.objoid IN (SELECT oid FROM rel))
       OR (d.classoid = 'pg_proc'::regclass AND d.objoid IN (SELECT oid FROM fn))
       OR (d.classoid = 'pg_type'::regclass AND d.objoid IN (SELECT oid FROM typ))
       OR (d.classoid = 'pg_namespace'::regclass AND d.objoid = ext.extnamespace)
       OR (d.classoid = 'pg_extension'::regclass AND d.objoid = ext.oid)

    -- Initial privileges recorded for extension objects (what pg_dump
    -- compares GRANTs/REVOKEs against).
    UNION ALL
    SELECT 'init_privs', pg_describe_object(ip.classoid, ip.objoid, ip.objsubid),
           format('%s %s', ip.privtype, ip.initprivs)
    FROM pg_init_privs ip, ext
    WHERE EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = ip.classoid AND d.objid = ip.objoid AND d.deptype = 'e'
                    AND d.refclassid = 'pg_extension'::regclass AND d.refobjid = ext.oid)
       OR (ip.classoid = 'pg_class'::regclass AND ip.objoid IN (SELECT oid FROM rel))
       OR (ip.classoid = 'pg_proc'::regclass AND ip.objoid IN (SELECT oid FROM fn))

    -- The schema itself.
    UNION ALL
    SELECT 'schema', n.nspname, format('acl=%s', n.nspacl)
    FROM pg_namespace n, ext WHERE n.oid = ext.extnamespace
)
-- A multi-line fact (function and view definitions) repeats the section and
-- object on each line, so that every line of a diff says where it belongs.
SELECT section || ' | ' || object || ' | '
       || replace(coalesce(fact, '<null>'), E'\n', E'\n' || section || ' | ' || object || ' |   ')
FROM facts
ORDER BY section, object, fact;
