-- The detection rule whose finding opened an incident (the finding's
-- `details.rule`, as a playbook's `when.rule` names it), so escalations
-- match playbooks exactly as the incident's opening did. NULL for
-- incidents opened by hand and for those opened before this column.
ALTER TABLE incidents ADD COLUMN rule TEXT CHECK (rule IS NULL OR length(rule) BETWEEN 1 AND 64);
