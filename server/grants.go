package server

import (
	"slices"
	"strings"

	"github.com/ffrtmp/ffrtmp/fsm"
)

// This file is the authorizer's half for people and keys: scopes that
// narrow a key, and the rule against escalation. Authorize (authz.go)
// stays the one decision; these helpers only ask it and compare
// permission sets.

// inScopes reports whether p's key allows perm: a key without scopes
// allows all of its user's role; one with scopes only those (and always
// self.view, so that a key can identify itself).
func inScopes(p *Principal, perm Permission) bool {
	return len(p.Scopes) == 0 || perm == PermSelfView || slices.Contains(p.Scopes, perm)
}

// EffectivePermissions returns what p may do: its role's permissions,
// narrowed by its key's scopes.
func EffectivePermissions(p *Principal) []Permission {
	var out []Permission
	for _, perm := range RolePermissions(p.Role) {
		if inScopes(p, perm) {
			out = append(out, perm)
		}
	}
	return out
}

// roleRank is a role's place in the chain, -1 for an unknown role.
func roleRank(r fsm.Role) int { return slices.Index(Roles(), r) }

// parseScopes checks scopes for a key of a user with role: each a known
// permission the role has (a scope narrows, never widens), none repeated.
func parseScopes(scopes []string, role fsm.Role) ([]Permission, error) {
	out := make([]Permission, 0, len(scopes))
	for _, s := range scopes {
		perm := Permission(strings.TrimSpace(s))
		switch {
		case !knownPermission(perm):
			return nil, fsm.Errorf(fsm.CodeInvalidArgument, "scope %s is not a permission (see docs/security.md)", echo(s))
		case !slices.Contains(RolePermissions(role), perm):
			return nil, fsm.Errorf(fsm.CodeInvalidArgument, "scope %s is not a permission of role %s: a scope narrows a role, never widens it", perm, role)
		case slices.Contains(out, perm):
			return nil, fsm.Errorf(fsm.CodeInvalidArgument, "scope %s is repeated", perm)
		}
		out = append(out, perm)
	}
	return out, nil
}

// authorizeGrant decides whether p may create (with perm: users.manage
// for users and invitations, keys.manage or keys.self for keys) something
// in tenant that holds role narrowed by scopes. Nobody grants outside
// their tenant unless a super-admin (Authorize), and nobody grants a role
// above their own or any permission they do not hold themselves, through
// their role or through their own key's scopes.
func authorizeGrant(p *Principal, perm Permission, tenant string, role fsm.Role, scopes []Permission) error {
	if err := Authorize(p, perm, tenant); err != nil {
		return err
	}
	if roleRank(role) > roleRank(p.Role) {
		return fsm.Errorf(CodePermissionDenied, "a %s cannot grant the role %s, which is above its own", p.Role, role)
	}
	granted := scopes
	if len(granted) == 0 {
		granted = RolePermissions(role)
	}
	mine := EffectivePermissions(p)
	for _, g := range granted {
		if !slices.Contains(mine, g) {
			return fsm.Errorf(CodePermissionDenied, "cannot grant %s: the granting key does not hold it", g)
		}
	}
	return nil
}

// authorizeUser decides whether the request's principal may use perm on
// user u. A user of another tenant, which the principal may not even
// list, is not_found. On anyone but themselves a principal needs perm in
// u's tenant and may act only on users whose role it could grant (a
// tenant admin cannot disable a super-admin of its tenant).
func authorizeUser(p *Principal, perm Permission, u *fsm.User) error {
	self := p.UserID != "" && p.UserID == u.ID
	if !self && Authorize(p, PermUsersView, u.TenantID) != nil {
		return fsm.Errorf(fsm.CodeNotFound, "user %s not found", echo(u.ID))
	}
	if perm == PermUsersView || self && perm == PermKeysSelf {
		return Authorize(p, perm, u.TenantID)
	}
	if perm == PermKeysSelf {
		perm = PermKeysManage
	}
	return authorizeGrant(p, perm, u.TenantID, u.Role, nil)
}
