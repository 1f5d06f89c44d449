-- Reserved for the tenants change (tenant limits and state). Migration
-- versions run without gaps, so this file holds the number until then.
SELECT 1;
