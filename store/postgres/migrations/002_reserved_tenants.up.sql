-- Reserved: this version number belongs to another change of issue 9
-- (tenants 002, users/keys/invitations 003) and is replaced by its file.
SELECT 1;
