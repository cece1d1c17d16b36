-- Multi-tenant test schema. {owner} owns the tables, {app} runs the
-- workload (and owns docs, whose RLS is not forced).
CREATE SCHEMA "Billing";
CREATE TABLE tenants (id bigint PRIMARY KEY, name text);
CREATE TABLE projects (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL, name text);
CREATE TABLE invoices (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL, project_id bigint, amount numeric, status text);
CREATE TABLE items (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL, invoice_id bigint, sku text, qty int);
CREATE TABLE users (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL, email text);
CREATE TABLE audit_log (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL DEFAULT current_setting('app.current_tenant')::bigint, msg text);
CREATE TABLE notes (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL, body text);
CREATE TABLE docs (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL, title text);
CREATE TABLE "Billing"."Ledger" (id bigserial PRIMARY KEY, tenant_id bigint NOT NULL, amount numeric);
CREATE TABLE countries (code text PRIMARY KEY, name text);
CREATE VIEW invoice_totals AS SELECT tenant_id, sum(amount) AS total FROM invoices GROUP BY tenant_id;
CREATE VIEW my_projects AS SELECT id, tenant_id, name FROM projects WHERE tenant_id = current_setting('app.current_tenant')::bigint;

ALTER TABLE projects ENABLE ROW LEVEL SECURITY;
ALTER TABLE projects FORCE ROW LEVEL SECURITY;
CREATE POLICY projects_tenant ON projects USING (tenant_id = current_setting('app.current_tenant')::bigint);
ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY notes_all ON notes USING (true);
ALTER TABLE docs ENABLE ROW LEVEL SECURITY;
CREATE POLICY docs_tenant ON docs USING (tenant_id = current_setting('app.current_tenant')::bigint);

INSERT INTO tenants VALUES (1, 'acme'), (2, 'globex');
INSERT INTO projects (tenant_id, name) VALUES (1, 'p1'), (2, 'p2');
INSERT INTO invoices (tenant_id, project_id, amount, status) VALUES (1, 1, 10, 'open'), (2, 2, 20, 'paid');
INSERT INTO items (tenant_id, invoice_id, sku, qty) VALUES (1, 1, 'a', 1), (2, 2, 'b', 2);
INSERT INTO users (tenant_id, email) VALUES (1, 'a@acme'), (2, 'b@globex');
INSERT INTO notes (tenant_id, body) VALUES (1, 'n1');
INSERT INTO docs (tenant_id, title) VALUES (1, 'd1');

ALTER TABLE tenants OWNER TO {owner};
ALTER TABLE projects OWNER TO {owner};
ALTER TABLE invoices OWNER TO {owner};
ALTER TABLE items OWNER TO {owner};
ALTER TABLE users OWNER TO {owner};
ALTER TABLE audit_log OWNER TO {owner};
ALTER TABLE notes OWNER TO {owner};
ALTER TABLE docs OWNER TO {app};
ALTER TABLE "Billing"."Ledger" OWNER TO {owner};
ALTER TABLE countries OWNER TO {owner};
ALTER VIEW invoice_totals OWNER TO {owner};
ALTER VIEW my_projects OWNER TO {owner};
GRANT USAGE ON SCHEMA "Billing" TO {app};
GRANT ALL ON ALL TABLES IN SCHEMA public, "Billing" TO {app};
GRANT ALL ON ALL SEQUENCES IN SCHEMA public, "Billing" TO {app};
